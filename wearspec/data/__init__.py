"""Data layer: readers → window store → Dataset/sampler; spectrogram front end; augmentations.

Modules: ``windowing`` (Recording, WindowSpec, resampling, NaN policy), ``store`` (the window
store), ``dataset`` (WindowDataset, ResumableSampler), ``splits`` (subject-wise splits),
``readers`` (native dataset formats), ``synthetic`` (the embedded default data), ``frontend``
(SpectrogramFrontend), ``augment`` (batched, seeded augmentations), ``prepare``, ``inspect``.
"""
