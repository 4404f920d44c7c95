"""A tiny shiftforge extension: the `tiny_invert` stage and the `tiny_gradient` source."""
