"""Tiny KerasHub presets, built offline with random weights, one per family."""

from pathlib import Path

SIZE = 32


def _families():
    from keras_hub import layers, models
    from keras_hub.src.models.siglip.siglip_text_encoder import SigLIPTextEncoder
    from keras_hub.src.models.siglip.siglip_vision_encoder import SigLIPVisionEncoder

    shape = (SIZE, SIZE, 3)
    vit = dict(num_layers=1, num_heads=2, hidden_dim=16)
    return {
        "dinov2": (lambda: models.DINOV2Backbone(patch_size=8, intermediate_dim=32, image_shape=shape,
                                                 position_embedding_shape=shape, **vit),
                   lambda: layers.DINOV2ImageConverter(image_size=(SIZE, SIZE), scale=1 / 255.0), 16),
        "dinov3": (lambda: models.DINOV3Backbone(patch_size=8, intermediate_dim=32, image_shape=shape,
                                                 **vit),
                   lambda: layers.DINOV3ImageConverter(image_size=(SIZE, SIZE), scale=1 / 255.0), 16),
        "vit": (lambda: models.ViTBackbone(image_shape=shape, patch_size=8, mlp_dim=32, **vit),
                lambda: layers.ViTImageConverter(image_size=(SIZE, SIZE), scale=1 / 127.5, offset=-1), 16),
        "deit": (lambda: models.DeiTBackbone(image_shape=shape, patch_size=8, intermediate_dim=32, **vit),
                 lambda: layers.DeiTImageConverter(image_size=(SIZE, SIZE), scale=1 / 255.0), 16),
        "siglip": (lambda: models.SigLIPBackbone(
            SigLIPVisionEncoder(patch_size=8, intermediate_dim=32, image_shape=shape, **vit),
            SigLIPTextEncoder(vocabulary_size=20, embedding_dim=16, intermediate_dim=32,
                              max_sequence_length=8, **vit)),
                   lambda: layers.SigLIPImageConverter(image_size=(SIZE, SIZE), scale=1 / 127.5,
                                                       offset=-1), 16),
        "resnet": (lambda: models.ResNetBackbone(
            input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 32],
            stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block"),
                   lambda: layers.ResNetImageConverter(image_size=(SIZE, SIZE), scale=1 / 255.0), 32),
        "densenet": (lambda: models.DenseNetBackbone(stackwise_num_repeats=[1, 1], growth_rate=8),
                     lambda: layers.DenseNetImageConverter(image_size=(SIZE, SIZE), scale=1 / 255.0), 44),
        "efficientnet": (lambda: models.EfficientNetBackbone(
            stackwise_width_coefficients=[1.0, 1.0], stackwise_depth_coefficients=[1.0, 1.0],
            stackwise_kernel_sizes=[3, 3], stackwise_num_repeats=[1, 1], stackwise_input_filters=[8, 8],
            stackwise_output_filters=[8, 16], stackwise_expansion_ratios=[1, 2],
            stackwise_squeeze_and_excite_ratios=[0.25, 0.25], stackwise_strides=[1, 2],
            stackwise_block_types=["v1", "v1"]),
                         lambda: layers.EfficientNetImageConverter(image_size=(SIZE, SIZE),
                                                                   scale=1 / 255.0), 1280),
    }


FAMILIES = ("dinov2", "dinov3", "vit", "deit", "siglip", "resnet", "densenet", "efficientnet")


def write_preset(folder: Path, family: str, seed: int = 0) -> int:
    """Save a tiny preset of ``family`` into ``folder``; the width of its feature."""
    import keras

    keras.utils.set_random_seed(seed)
    backbone, converter, width = _families()[family]
    backbone().save_to_preset(str(folder))
    converter().save_to_preset(str(folder))
    return width
