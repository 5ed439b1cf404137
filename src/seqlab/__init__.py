"""seqlab: neural sequence models you can read, verified against torch.nn and Hugging Face."""

__version__ = "0.1.0"
