"""Drop-in ``nn.Module`` losses built on the ops, with functional forms."""
