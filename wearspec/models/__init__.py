"""Backbones (timm ViT/Swin for spectrograms), SepTr, CNN teacher and heads."""
