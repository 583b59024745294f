"""Pretrained fpezoo weights, installed as the package ``fpezoo._weights``.

See ``registry.json`` for the registered names and each model card (``*.md``).
"""
