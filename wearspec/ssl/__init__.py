"""EsViT/DINO self-supervised pretraining: losses, multi-crop, EMA teacher, the recipe."""
