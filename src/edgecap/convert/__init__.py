"""Run directory -> TFLite bundle (encoder + decoder step + manifest). Needs TensorFlow."""
