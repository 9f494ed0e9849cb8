"""PyTorch `torch.save` files (zip and legacy), read and written without torch."""
