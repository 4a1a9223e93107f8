"""The data layer: datasets, their files, the beton format, loaders, generated data, text.

From the bottom up (a module imports only modules listed before it, if any):

    raw        readers of the datasets' raw files (CIFAR pickles, MNIST idx, SVHN .mat, folders)
    shapes     the built-in image generator (shape/digit/colour) and two bundled OOD sets
    shapetree  the ColorShapeDigit800k folder tree: write the generator's, read any
    partition  the ColorShapeDigit label partitions: models, label maps, reading the tree
    registry   one entry per image dataset: classes, resolution, mean/std, how to load it
    betons     the FFCV beton format: write (atomic, idempotent), sidecars, read back
    augment    the study's training augmentation: settings, FFCV transforms, the same in torch
    loaders    make_loader (FFCV) and ArrayLoader (in memory) over betons and arrays
    textgen    six generated text domains
    text       text corpora tokenised into .bin streams, and windows over them
    prepare    every beton the label-partition experiment reads, in one call
    builtin    the built-in study's data, written from the generators
    fake       tiny raw files in the real formats, for tests and benchmarks
    cli        `reprsim write-data` and `reprsim reorg-tinyimagenet`

tests/test_layering.py checks that no import goes in a circle or up a floor.
"""
