"""The documents against the code and the tree: the README's API signatures, every relative link."""
