"""Datasets and input preprocessing: the built-in loaders (Fashion-MNIST,
CIFAR-10), the user's own data (npz, image folders, single images) and the one
image preprocessing that training and inference share. numpy and Pillow only:
the runtime side (nasrt run, calibration) uses it without torch."""
