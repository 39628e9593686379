"""TensorFlow / Keras side: encoder, decoder, model, training loop, evaluation. Imports TensorFlow."""
