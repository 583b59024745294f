"""Function-preserving widening (Net2WiderNet) of trained convolutional networks.

Chen, Goodfellow and Shlens, "Net2Net: Accelerating Learning via Knowledge
Transfer", ICLR 2016. A trained narrow network is copied into a wider one of the
same topology so that the wider one computes the same function; training then
goes on from there instead of from random weights. fpezoo's width-64 FPENet
starts from its trained width-32 FPENet this way.

Each widened layer's output channel ``j`` copies the narrow channel
``j mod narrow_channels``; each consumer splits the weights it had on a narrow
channel among that channel's copies with random fractions that sum to one, so
the sum is unchanged (exactly, for channel-wise activations such as ReLU) while
the copies receive different gradients and can drift apart.
"""

import keras
import numpy as np

# layer type -> (input-channel axis, output-channel axis) of its kernel
_KERNEL_AXES = {
    keras.layers.Conv2D: (2, 3),
    keras.layers.Conv2DTranspose: (3, 2),
    keras.layers.Dense: (0, 1),
}


def widen_weights(narrow, wide, seed=0):
    """Sets the weights of ``wide`` so that it computes what ``narrow`` computes.

    Both models must have the same layers (names, types and connections); ``wide``
    may have more channels in any layer whose output is not a model output.
    Layers with weights must be ``Conv2D``, ``Conv2DTranspose`` or ``Dense``
    (no batch norm, PReLU or depthwise layers); layers without weights must act
    on each channel alone or be ``Concatenate``.

    Args:
        narrow: the trained Keras functional model.
        wide: a model of the same topology with at least as many channels per layer.
        seed: seed of the random weight splits.

    Raises:
        ValueError: the models differ in layers or connections, a layer of
            ``wide`` is narrower, or a layer type cannot be widened.
    """
    rng = np.random.default_rng(seed)
    narrow_outputs = [tuple(tensor.shape) for tensor in narrow.outputs]
    wide_outputs = [tuple(tensor.shape) for tensor in wide.outputs]
    if narrow_outputs != wide_outputs:
        raise ValueError(
            "The narrow and the wide model must have outputs of the same shapes. "
            f"Received: narrow outputs={narrow_outputs}, wide outputs={wide_outputs}"
        )
    narrow_names = [layer.name for layer in narrow.layers]
    wide_names = [layer.name for layer in wide.layers]
    if narrow_names != wide_names:
        raise ValueError(
            "The narrow and the wide model must have the same layers in the same order. "
            f"Received: narrow layers={narrow_names}, wide layers={wide_names}"
        )
    # layer name -> for each channel of the wide output, the narrow channel it copies
    copies_of = {}
    for narrow_layer, wide_layer in zip(narrow.layers, wide.layers):
        if type(narrow_layer) is not type(wide_layer):
            raise ValueError(
                f"Layer {narrow_layer.name!r} has different types in the two models. Received: "
                f"narrow={type(narrow_layer).__name__}, wide={type(wide_layer).__name__}"
            )
        inbound = _inbound_layer_names(narrow_layer)
        if not narrow_layer.weights:
            copies_of[narrow_layer.name] = _passed_copies(narrow_layer, inbound, narrow, copies_of)
            continue
        axes = _KERNEL_AXES.get(type(narrow_layer))
        if axes is None:
            raise ValueError(
                f"Layer {narrow_layer.name!r} of type {type(narrow_layer).__name__} cannot be widened "
                f"(supported: {sorted(kind.__name__ for kind in _KERNEL_AXES)}). "
                f"Received: layer={narrow_layer.name!r}"
            )
        output_copies = _output_copies(narrow_layer, wide_layer)
        input_copies = copies_of[inbound[0]]
        wide_layer.set_weights(_widened_arrays(narrow_layer, axes, input_copies, output_copies, rng))
        copies_of[narrow_layer.name] = output_copies


def _inbound_layer_names(layer):
    node = layer._inbound_nodes[0]
    return [tensor._keras_history.operation.name for tensor in node.input_tensors]


def _channels(tensors):
    return keras.tree.flatten(tensors)[0].shape[-1]


def _passed_copies(layer, inbound, narrow, copies_of):
    """The narrow channel each wide output channel of a layer without weights copies.

    Inputs (none for an input layer) that are not widened give outputs that are
    not; ``Concatenate`` joins the copies of its inputs; other layers must keep
    the channels of their one widened input (pooling, upsampling, activations).
    """
    if isinstance(layer, keras.layers.Concatenate):
        offsets = np.cumsum([0] + [_channels(narrow.get_layer(name).output) for name in inbound])
        return np.concatenate([copies_of[name] + offset for name, offset in zip(inbound, offsets)])
    widened = [name for name in inbound
               if not np.array_equal(copies_of[name], np.arange(_channels(narrow.get_layer(name).output)))]
    if not widened:
        return np.arange(_channels(layer.output))
    if len(inbound) == 1 and _channels(layer.output) == _channels(layer.input):
        return copies_of[inbound[0]]
    raise ValueError(
        f"Layer {layer.name!r} has no weights to widen and does not keep the channels of its "
        f"widened inputs {widened}. Received: layer={layer.name!r}"
    )


def _output_copies(narrow_layer, wide_layer):
    narrow_channels = narrow_layer.output.shape[-1]
    wide_channels = wide_layer.output.shape[-1]
    if wide_channels < narrow_channels:
        raise ValueError(
            f"Layer {narrow_layer.name!r} is narrower in the wide model. "
            f"Received: narrow channels={narrow_channels}, wide channels={wide_channels}"
        )
    return np.arange(wide_channels) % narrow_channels


def _widened_arrays(layer, axes, input_copies, output_copies, rng):
    """The layer's kernel (and bias) for the wide channels, function preserved."""
    input_axis, output_axis = axes
    kernel, *bias = layer.get_weights()
    narrow_inputs, narrow_outputs = kernel.shape[input_axis], kernel.shape[output_axis]
    # fractions[j, o]: share of the narrow weight (copied input channel, o) given
    # to wide input j; the shares of one narrow channel's copies sum to one.
    shares = rng.uniform(0.5, 1.5, size=(len(input_copies), narrow_outputs))
    totals = np.zeros((narrow_inputs, narrow_outputs))
    np.add.at(totals, input_copies, shares)
    fractions = shares / totals[input_copies]
    kernel = np.take(kernel, input_copies, axis=input_axis)
    shape = [1] * kernel.ndim
    shape[input_axis], shape[output_axis] = fractions.shape
    if input_axis > output_axis:
        fractions = fractions.T
    kernel = kernel * fractions.reshape(shape)
    kernel = np.take(kernel, output_copies, axis=output_axis)
    return [kernel.astype(np.float32)] + [array[output_copies] for array in bias]
