"""Analysis and rewrite passes over the traced graph (installed as `widthc.passes`)."""
