"""Dataset assembly, teacher fine-tuning, distillation, evaluation, promotion, the job entry.

Imports ``models`` and the Faust-free storage layer, never Faust (DESIGN.md)."""
