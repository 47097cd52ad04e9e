"""Model and data sources (installed as `widthc.frontends`)."""
