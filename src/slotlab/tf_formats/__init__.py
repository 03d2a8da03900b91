"""TensorFlow file formats, read (and partly written) without TensorFlow or protobuf.

    wire        the protobuf wire format (bounds-checked reader, varint encoders)
    crc         the masked CRC32C of TFRecord framing and TF checkpoint tables
    tfrecord    TFRecord files: streaming, indexing, random access, writing
    example     tf.train.Example parsing and encoding
    checkpoint  TF2 checkpoints (tensor bundles): `TFCheckpoint`
    official    the official Slot Attention checkpoint names -> slotlab models

Used by the dataset readers of `slotlab.data` and by `slotlab.convert`. Importing this package
imports none of its modules.
"""
