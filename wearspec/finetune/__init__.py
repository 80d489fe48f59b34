"""DeSepTr fine-tuning: CNN teacher, distillation losses, the student recipe."""
