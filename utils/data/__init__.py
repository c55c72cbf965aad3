"""Data: training/test datasets, strict image reading, transforms, the toy set, DAVIS import."""
