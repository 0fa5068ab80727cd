"""lifted_inverse: inverse-problems imaging with lifted Bregman training and inversion."""
__version__ = "0.1.0"
