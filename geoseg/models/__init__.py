"""Networks: the BatchNorm U-Net, keras.applications encoders under the same decoder, the
layers they share, and a model run over an image of any size by overlapping chips."""
