"""Turns folders of images into library rows and vectors: scan -> decode -> encode -> write."""
