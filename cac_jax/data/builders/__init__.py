"""TFDS builders of this project (not in the TFDS catalog), all written to array_record.

They live in a package because TFDS only runs a builder without TensorFlow when it is imported
from a package. Images are stored as raw ``uint8`` tensors (``tfds.features.Tensor``), not as
``tfds.features.Image``: encoding PNGs needs TensorFlow. Every example also stores ``index``, its
position in the source's original (torchvision/Keras) order, because TFDS shuffles records when
it writes them; readers sort by it.

* ``cac_digits`` (:mod:`.digits`): scikit-learn's bundled 8x8 digits, no file, no network.
* ``cac_local_npz`` (:mod:`.local_npz`): a Keras-layout ``.npz`` file on disk.
* ``cac_tiny_imagenet`` (:mod:`.tiny_imagenet`): the standard ``tiny-imagenet-200`` zip or folder.
"""
