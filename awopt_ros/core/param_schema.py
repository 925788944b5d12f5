"""Which parameters each node takes, read from its source, and the check of a params YAML and
``--set`` overrides against them (ROS-free: no node is constructed, nothing is imported).

A node declares its parameters with ``awopt_ros.ros.params.declare(self, 'name', ...)`` or
``self.declare_parameter('name', ...)``. :func:`declared_parameters` finds those calls with
:mod:`ast` in the node's module and in the awopt_ros functions that module calls (e.g.
``convert.proprio_publisher`` declares ``publish_proprio``), so a misspelt key in the YAML
(``reopen_empty_griper``) or in ``--set policy:actor_noise_sdt=0.1``, or an unknown node
(``--set polcy:mode=cem``), is refused before any node process starts, with the closest
known names suggested.
"""
import ast
import difflib
from functools import lru_cache
from pathlib import Path

#: Parameters every rclpy node declares itself; accepted for every node.
BUILTIN_PARAMS = frozenset({'use_sim_time', 'start_type_description_service'})
#: Prefixes of parameters rclpy declares on demand (QoS overrides of publishers/subscriptions).
BUILTIN_PREFIXES = ('qos_overrides.',)
#: Params YAML section whose parameters reach every node.
WILDCARD = '/**'
#: The ``declare`` helper (awopt_ros.ros.params); its own body is not followed.
_DECLARE_HELPER = ('awopt_ros.ros.params', 'declare')
_PACKAGE = 'awopt_ros'
_PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: How many calls deep helper functions are followed from a node module.
_MAX_DEPTH = 4


class SchemaError(RuntimeError):
    """A node's parameters cannot be read from its source (a name that is not a string
    literal, ``declare_parameters``, a module that does not exist); the message says where."""


class ParameterError(ValueError):
    """The params YAML or the overrides cannot configure the stack (the message says why);
    raised before any node starts."""


class UnknownParameterError(ParameterError):
    """The params YAML or an override names a node or parameter the stack does not have."""


def is_builtin(name):
    """Return True when ``name`` is a parameter rclpy declares on every node itself."""
    return name in BUILTIN_PARAMS or name.startswith(BUILTIN_PREFIXES)


def _module_path(module):
    """Return the source file of the awopt_ros module ``module`` (without importing it)."""
    parts = module.split('.')
    if parts[0] != _PACKAGE:
        raise SchemaError(f'{module}: not an {_PACKAGE} module')
    base = _PACKAGE_DIR.joinpath(*parts[1:])
    for path in (base.with_suffix('.py'), base / '__init__.py'):
        if path.is_file():
            return path
    raise SchemaError(f'{module}: no source file under {_PACKAGE_DIR}')


@lru_cache(maxsize=None)
def _parse(module):
    path = _module_path(module)
    return path, ast.parse(path.read_text(encoding='utf-8'), filename=str(path))


def _imports(tree, module):
    """Return {local name: (module, attribute or None)} of the tree's awopt_ros imports."""
    out = {}
    package = module.rsplit('.', 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:       # relative import
                base = '.'.join(package.split('.')[:len(package.split('.')) - node.level + 1]
                                + ([base] if base else []))
            if not base.startswith(_PACKAGE):
                continue
            for alias in node.names:
                local = alias.asname or alias.name
                sub = f'{base}.{alias.name}'
                try:
                    _module_path(sub)
                    out[local] = (sub, None)          # a module: `from awopt_ros.ros import x`
                except SchemaError:
                    out[local] = (base, alias.name)   # a name defined in module `base`
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(_PACKAGE) and alias.asname:
                    out[alias.asname] = (alias.name, None)
    return out


def _literal_name(call, index, path, what):
    args = call.args
    node = args[index] if len(args) > index else next(
        (k.value for k in call.keywords if k.arg == 'name'), None)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    raise SchemaError(f'{path}:{call.lineno}: {what} with a parameter name that is not a '
                      'string literal; the params check reads names from the source')


def _scan(module, tree_node, depth, seen):
    """Return the parameter names declared in ``tree_node`` (of ``module``) and in the
    awopt_ros functions it calls, ``depth`` calls deep at most."""
    path, tree = _parse(module)
    imports = _imports(tree, module)
    local_defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    names = set()
    for call in ast.walk(tree_node):
        if not isinstance(call, ast.Call):
            continue
        func = call.func
        target = None                    # (module, function) of a call to follow
        if isinstance(func, ast.Name):
            if func.id in imports and imports[func.id][1] is not None:
                target = imports[func.id]
            elif func.id in local_defs:
                target = (module, func.id)
        elif isinstance(func, ast.Attribute):
            if func.attr == 'declare_parameter':
                names.add(_literal_name(call, 0, path, 'declare_parameter'))
                continue
            if func.attr == 'declare_parameters':
                raise SchemaError(f'{path}:{call.lineno}: declare_parameters is not read by '
                                  'the params check; declare each parameter with declare()')
            value = func.value
            if isinstance(value, ast.Name) and value.id in imports \
                    and imports[value.id][1] is None:
                target = (imports[value.id][0], func.attr)
        if target == _DECLARE_HELPER:
            names.add(_literal_name(call, 1, path, 'declare()'))
        elif target is not None and depth > 0 and target not in seen:
            seen.add(target)
            names |= _function_params(*target, depth - 1, seen)
    return names


def _function_params(module, function, depth, seen):
    try:
        _, tree = _parse(module)
    except SchemaError:
        return set()
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function]
    return _scan(module, defs[0], depth, seen) if defs else set()


@lru_cache(maxsize=None)
def declared_parameters(module):
    """Return the names of the parameters the node module ``module`` (e.g.
    ``'awopt_ros.nodes.policy'``) declares, as a frozenset, read from its source.

    Follows calls into awopt_ros functions (up to 4 deep) that declare parameters for the node.
    rclpy's own parameters (:data:`BUILTIN_PARAMS`) are not included.

    Raises:
        SchemaError: the module has no source file, or declares a parameter whose name is not
            a string literal (the check could not see it).
    """
    _, tree = _parse(module)
    return frozenset(_scan(module, tree, _MAX_DEPTH, set()))


def node_schemas(node_modules):
    """Return {node name: frozenset of its parameter names} for {node name: module}."""
    return {name: declared_parameters(module) for name, module in node_modules.items()}


def flatten(params, prefix=''):
    """Return the nested mapping ``params`` as {dotted name: value}, as ROS reads a params
    file (``qos_overrides: {/t: {depth: 5}}`` -> ``{'qos_overrides./t.depth': 5}``)."""
    out = {}
    for key, value in (params or {}).items():
        name = f'{prefix}{key}'
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + '.'))
        else:
            out[name] = value
    return out


def _suggest(word, candidates, what):
    close = difflib.get_close_matches(word, sorted(candidates), n=3, cutoff=0.6)
    if close:
        return ' (did you mean ' + ' or '.join(repr(c) for c in close) + '?)'
    return f' ({what}: {", ".join(sorted(candidates))})'


def unknown_node_message(source, node, schema):
    """Return the error text for a node name that is not in ``schema``."""
    return (f'{source}: no node {node!r} in the stack'
            + _suggest(node.lstrip('/'), schema, 'nodes'))


def unknown_param_message(source, node, param, declared):
    """Return the error text for a parameter ``param`` that ``node`` does not declare."""
    return (f'{source}: {node} has no parameter {param!r}'
            + _suggest(param, declared, 'its parameters'))


def _section_errors(source, key, section, schema):
    if section is None:
        return []
    if not isinstance(section, dict) or set(section) - {'ros__parameters'}:
        found = ', '.join(repr(k) for k in section) if isinstance(section, dict) else 'a value'
        return [f"{source}: {key} must hold only 'ros__parameters:' (found {found})"]
    params = section.get('ros__parameters')
    if params is None:
        return []
    if not isinstance(params, dict):
        return [f'{source}: {key}: ros__parameters must be a mapping of parameter names']
    if key == WILDCARD:
        everyone = frozenset().union(*schema.values())
        return [f"{source}: '{WILDCARD}' sets {name!r}, which no node declares"
                + _suggest(name, everyone, 'parameters')
                for name in flatten(params) if not is_builtin(name) and name not in everyone]
    node = key.lstrip('/')
    return [unknown_param_message(source, node, name, schema[node])
            for name in flatten(params) if not is_builtin(name) and name not in schema[node]]


def unknown_parameter_errors(doc, schema, *, source, overrides=None):
    """Return one error text per unknown node or parameter (an empty list when all is known).

    Args:
        doc: the params YAML as loaded: {node name or '/name' or '/**': {'ros__parameters':
            {param: value}}}; a ``/**`` parameter must be declared by at least one node.
        schema: {node name: parameter names it declares} (:func:`node_schemas`).
        source: how the user named the file, for the messages (e.g. 'config/x.yaml').
        overrides: {node: {param: value}} (``--set NODE:PARAM=VALUE``).
    """
    errors = []
    if not isinstance(doc, dict):
        return [f'{source}: not a mapping of node names to ros__parameters']
    for key, section in doc.items():
        key = str(key)
        if key != WILDCARD and key.lstrip('/') not in schema:
            errors.append(unknown_node_message(source, key, schema))
            continue
        errors += _section_errors(source, key, section, schema)
    for node, params in (overrides or {}).items():
        if node not in schema:
            first = next(iter(params or {}), 'PARAM')
            errors.append(unknown_node_message(f'--set {node}:{first}', node, schema))
            continue
        errors += [unknown_param_message(f'--set {node}:{param}', node, param, schema[node])
                   for param in params or {} if not is_builtin(param)
                   and param not in schema[node]]
    return errors


def check_known_parameters(doc, schema, *, source, overrides=None):
    """Raise :class:`UnknownParameterError` (a ValueError) listing every unknown node and
    parameter of ``doc`` and ``overrides``, one per line; see :func:`unknown_parameter_errors`.
    """
    errors = unknown_parameter_errors(doc, schema, source=source, overrides=overrides)
    if errors:
        raise UnknownParameterError('\n'.join(errors))


def check_params_file(config, node_modules, overrides=None):
    """Check the params YAML ``config`` and ``overrides`` against the parameters the nodes of
    ``node_modules`` ({node name: module}) declare; nothing is started.

    Raises:
        UnknownParameterError: an unknown node or parameter, naming the file or the ``--set``
            option, the node and the key, with the closest known names.
        FileNotFoundError: no file at ``config``.
        SchemaError: a node's parameters cannot be read from its source.
    """
    import yaml

    from awopt_ros.core.paths import resolve
    with open(resolve(config), encoding='utf-8') as f:
        doc = yaml.safe_load(f) or {}
    check_known_parameters(doc, node_schemas(node_modules), source=str(config),
                           overrides=overrides)
