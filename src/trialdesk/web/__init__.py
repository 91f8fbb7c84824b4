"""Server-rendered pages (Jinja2): thin handlers over the services."""
