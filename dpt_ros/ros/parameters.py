# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The node's ROS parameters, from the one table: declared with descriptors, read, set live.

Every parameter of dpt_ros.core.params.param_table is declared with its description and
range (`ros2 param describe`); values are validated by building a Config. A live change
(`ros2 param set`) is validated the same way and refused with the reason when it is bad.
Settings that need a reload (the table's read_only: model.*, cameras, anchors.source, ...)
are read-only on DptNode; on the lifecycle node configure reads them, so they can be set
while it is unconfigured (to fix a failed configure) and are refused, with the reason, while
it is inactive or active. rclpy cannot change a descriptor's read_only at run time: there the
description states the rule and the set-parameters callback enforces it.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, Iterable, List, Optional

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType, SetParametersResult)
from rclpy.parameter import Parameter

from dpt_ros.core.config import check_settings, Config, config_from_flat, ConfigError
from dpt_ros.core.params import closest_name, OWN_GROUPS, param_table, ParamSpec

CLASS_NAMES_PARAM = 'segmentation.class_names'
# The type `ros2 param describe` shows for the settings declared with dynamic typing.
_KEPT_TYPES = {float: ParameterType.PARAMETER_DOUBLE, tuple: ParameterType.PARAMETER_STRING_ARRAY}


def descriptor(spec: ParamSpec, managed: bool = False) -> ParameterDescriptor:
    """Build the ParameterDescriptor for one table entry (what `ros2 param describe` shows).

    managed: the lifecycle node's (settings configure reads are set while unconfigured).
    """
    d = ParameterDescriptor(description=spec.describe(managed),
                            read_only=spec.read_only and not managed,
                            additional_constraints=f'allowed: {spec.constraint()}')
    if spec.type is float:
        # Doubles accept YAML integers ('max: 10'), which static typing would refuse; the
        # value is checked and converted by Config validation instead.
        d.type = ParameterType.PARAMETER_DOUBLE
        d.dynamic_typing = True
        if spec.range is not None:
            d.floating_point_range = [FloatingPointRange(
                from_value=float(spec.range[0]), to_value=float(spec.range[1]), step=0.0)]
    elif spec.type is tuple:
        # Any type is let through to Config validation, which names the setting: `ros2 param
        # set` sends '[]' as an empty bool array (it guesses types from YAML), and a static
        # string array would refuse it, so a list once set could never be emptied again.
        d.type = ParameterType.PARAMETER_STRING_ARRAY
        d.dynamic_typing = True
    elif spec.type is int and spec.range is not None:
        d.integer_range = [IntegerRange(from_value=int(spec.range[0]),
                                        to_value=int(spec.range[1]), step=1)]
    return d


def _empty_list(spec: ParamSpec, value: Optional[Parameter]) -> bool:
    """Whether a list parameter is given empty: [] (rcl passes it on as not set) or null.

    null is what `ros2 param dump` wrote for an empty list before lists were declared with a
    value; rcl reads it as the text 'null', which no list setting could mean otherwise.
    """
    return spec.type is tuple and value is not None and (
        value.type_ == Parameter.Type.NOT_SET or value.value == 'null')


def given(node: Any) -> Dict[str, Parameter]:
    """Return the parameter values a node was started with (constructor and --ros-args).

    rclpy (Humble to Kilted) has no public accessor for them: Node.__init__ collects the
    command line's and the parameter_overrides argument's values in Node._parameter_overrides,
    where Node.declare_parameter reads them (rclpy/node.py). Read here, and only here, to name
    a bad value and to refuse unknown names; test_parameters.py's
    test_bad_parameter_at_startup_exits_with_one_message (points.stride, depth.maxx) pins both.
    """
    return dict(getattr(node, '_parameter_overrides', {}) or {})


class Parameters:
    """A node's table parameters: declared once, read as a Config, changed live through apply.

    apply(cfg) takes a validated config of a live change, or raises ConfigError to refuse it.
    state, for a managed node, returns its state ('unconfigured', 'inactive', 'active'): the
    settings configure reads are then set while unconfigured only.
    """

    def __init__(self, node: Any, apply: Callable[[Config], None],
                 state: Optional[Callable[[], str]] = None) -> None:
        self.node = node
        self.apply = apply
        self.state = state
        self._own_set = False  # the node updating segmentation.class_names itself
        self._declare()
        node.add_on_set_parameters_callback(self._on_set)

    def _declare(self) -> None:
        """Declare every table parameter (values are validated by read)."""
        overrides = given(self.node)
        for spec in param_table():
            default, empty = spec.default, _empty_list(spec, overrides.get(spec.name))
            if spec.type is tuple:
                # Declared with a value, [] when empty, never 'not set': `ros2 param dump`
                # writes a value not set as null, which rcl reads back as the text 'null'.
                default = [] if empty else list(spec.default)
            try:
                self.node.declare_parameter(spec.name, default,
                                            descriptor(spec, self.state is not None),
                                            ignore_override=empty)
            except Exception as exc:  # noqa: B902 - rclpy raises several types here
                value = overrides.get(spec.name)
                shown = f' = {value.value!r}' if value is not None else ''
                raise ConfigError(f'parameter {spec.name}{shown}: {exc} '
                                  f'(allowed: {spec.constraint()}).') from exc
        self._keep_types(spec.name for spec in param_table())
        unknown = sorted(n for n in overrides if n.startswith(OWN_GROUPS)
                         and not self.node.has_parameter(n) and n != CLASS_NAMES_PARAM)
        if unknown:
            known = ', '.join(p.name for p in param_table())
            raise ConfigError(f"unknown parameter(s) {', '.join(unknown)}; known: {known}.")
        self._tell_foreign(overrides)

    def _tell_foreign(self, overrides: Dict[str, Parameter]) -> None:
        """Say which given names outside our groups are ignored; warn where one looks mistyped.

        Not refused: a params file's /** section may hold other nodes' settings too.
        """
        qos = sorted(n for n in overrides if n.startswith('qos_overrides.'))
        if qos:
            self.node.get_logger().warning(
                f"{', '.join(qos)}: not read: dpt_ros sets its QoS from input.reliability "
                '(inputs follow their publishers by default), output.reliability and '
                'output.history_depth.')
        foreign = sorted(n for n in overrides if not n.startswith(OWN_GROUPS)
                         and n not in qos and not self.node.has_parameter(n))
        typos = {n: closest_name(n) for n in foreign}
        for name, close in typos.items():
            if close:
                self.node.get_logger().warning(
                    f"parameter '{name}' is not a dpt_ros parameter and is ignored: did you "
                    f"mean '{close}'?")
        rest = [n for n, close in typos.items() if not close]
        if rest:
            self.node.get_logger().info(
                f"ignored, not dpt_ros parameters: {', '.join(rest)}")

    def _flat(self) -> Dict[str, Any]:
        return {spec.name: self._value(spec.name) for spec in param_table()}

    def _value(self, name: str) -> Any:
        return self.node.get_parameter(name).value

    def read(self) -> Config:
        """Return the validated config from the parameters in force (ConfigError if bad)."""
        return config_from_flat(self._flat())

    def declare_class_names(self, labels: List[str]) -> None:
        """Publish the loaded model's class names as segmentation.class_names (each activation).

        Read-only to everyone else: on DptNode (activated once) by its descriptor; on the
        lifecycle node, whose next configure may load another model, by the set-parameters
        callback, so the node itself can update it. A value for it in a params file is ignored
        (the model's names win), with a warning unless it holds those names (a dump's does).
        """
        managed = self.state is not None
        declared = self.node.has_parameter(CLASS_NAMES_PARAM)
        if declared and not managed:
            return
        if not declared:
            given_value = given(self.node).get(CLASS_NAMES_PARAM)
            # A `ros2 param dump` of the node holds the names: the same model's are no news
            # (an empty list reaches rclpy as not set, or as 'null': _empty_list).
            names = given_value.value if given_value is not None else labels
            names = [] if names is None or names == 'null' else names
            if not isinstance(names, (list, tuple)) or list(names) != list(labels):
                self.node.get_logger().warning(
                    f'{CLASS_NAMES_PARAM} = {given_value.value!r} from the parameters is '
                    "ignored: it is read-only and holds the segmentation model's class names.")
        self._own_set = True  # declaring runs the set-parameters callbacks too
        try:
            if declared:
                self.node.set_parameters([Parameter(CLASS_NAMES_PARAM,
                                                    Parameter.Type.STRING_ARRAY, list(labels))])
            else:
                # Declared with a value, [] without a segmentation model: a parameter
                # statically typed and not set makes rclpy's get_parameters service answer
                # no values at all to a request naming it, and `ros2 param dump` asks for
                # every parameter in one request. An empty list has no type of its own in
                # rclpy, so the typing is dynamic and the described type put back.
                self.node.declare_parameter(
                    CLASS_NAMES_PARAM, list(labels),
                    ParameterDescriptor(
                        description='Class names of the segmentation model, by id (index = '
                        'value in segmentation/image); set by the node from the model. '
                        'Read-only.', read_only=not managed, dynamic_typing=True),
                    ignore_override=True)
        finally:
            self._own_set = False
        self.node.describe_parameter(CLASS_NAMES_PARAM).type = \
            ParameterType.PARAMETER_STRING_ARRAY

    def _fixed_hint(self, reason: str, changes: Dict[str, Any]) -> str:
        """How to change a setting the refusal names that cannot change live, if it names one."""
        fixed = [spec.name for spec in param_table() if spec.read_only and
                 spec.name not in changes and re.search(rf'\b{re.escape(spec.name)}\b', reason)]
        if not fixed:
            return ''
        how = ('read at configure: deactivate and clean up the node, set it, then configure '
               'again' if self.state is not None else 'read at start-up: restart the node with '
               'it set')
        return f" ({', '.join(fixed)} cannot change while the node runs; {how}.)"

    def _keep_types(self, names: Iterable[str]) -> None:
        """Show doubles and lists as such in `ros2 param describe`, whatever type was last sent.

        They are declared with dynamic typing (to take YAML integers, and an empty list of any
        type), and rclpy then sets the descriptor's type to the type of each value sent, before
        the callback and even when it refuses the value (rclpy Node._apply_descriptor);
        describe_parameter returns the descriptor rclpy keeps, so the type is put back here.
        """
        specs = {spec.name: spec for spec in param_table()}
        for name in names:
            kept = _KEPT_TYPES.get(specs[name].type) if name in specs else None
            if kept is not None and self.node.has_parameter(name):
                self.node.describe_parameter(name).type = kept

    def _on_set(self, params: List[Parameter]) -> SetParametersResult:
        self._keep_types(p.name for p in params)
        if any(p.name == CLASS_NAMES_PARAM for p in params) and not self._own_set:
            return SetParametersResult(successful=False, reason=(
                f"{CLASS_NAMES_PARAM} is read-only: the node sets it from the segmentation "
                'model it loads.'))
        specs = {p.name: p for p in param_table()}
        deleted = [p.name for p in params if p.name in specs and p.type_ == Parameter.Type.NOT_SET]
        if deleted:
            # rclpy would undeclare a dynamically typed one (ros2 param delete) once accepted.
            return SetParametersResult(successful=False, reason=(
                f"{', '.join(deleted)}: dpt_ros parameters cannot be deleted; set a value "
                "instead ('[]' empties a list)."))
        changes = {p.name: p.value for p in params if p.name in specs}
        if not changes:
            return SetParametersResult(successful=True)
        fixed = [n for n in changes if specs[n].read_only]
        managed = self.state is not None  # else rclpy refuses read-only ones by descriptor
        state = self.state() if managed else 'active'
        if managed and fixed and state != 'unconfigured':
            return SetParametersResult(successful=False, reason=(
                f"{', '.join(fixed)}: read at configure, settable only while the node is "
                f'unconfigured; it is {state}. Deactivate and clean up first (ros2 lifecycle '
                'set <node> deactivate, then cleanup), set it, then configure again.'))
        try:
            if state == 'unconfigured':
                # Each value on its own: configure checks them together, so a fix is never
                # refused because another setting is still bad (or a pair is half set).
                check_settings(changes)
            else:
                flat = self._flat()
                flat.update(changes)
                self.apply(config_from_flat(flat))
        except ConfigError as exc:
            return SetParametersResult(successful=False,
                                       reason=str(exc) + self._fixed_hint(str(exc), changes))
        self.node.get_logger().info(
            'parameters updated: ' + ', '.join(f'{k}={v!r}' for k, v in changes.items()) +
            (' (checked together at configure)' if state == 'unconfigured' else ''))
        return SetParametersResult(successful=True)
