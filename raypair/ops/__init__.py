"""Pure tensor functions: device from the inputs, randomness from an explicit torch.Generator."""
