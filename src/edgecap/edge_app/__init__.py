"""The Kivy point-of-care app. Device-safe: runtime only, no TensorFlow."""
