"""The web layer: the Flask application, its request unit of work, API, storefront and console."""
