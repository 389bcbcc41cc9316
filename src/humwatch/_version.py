"""humwatch's version: a leaf module, so that what records the version never imports the package's
public API (``humwatch/__init__.py``), nor what that imports."""

__version__ = "0.1.0"
