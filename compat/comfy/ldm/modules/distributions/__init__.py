"""`comfy.ldm.modules.distributions`."""
