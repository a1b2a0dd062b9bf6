"""Mode connectivity by trained Bezier / polygonal curves (survey V-B, Conjectures V.3 / V.4)."""
