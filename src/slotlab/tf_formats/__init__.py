"""TensorFlow file formats read without TensorFlow."""
