"""The PATCH interaction's two body formats (https://hl7.org/fhir/R4/http.html#patch), applied to a copy:

- JSON Patch (RFC 6902, ``application/json-patch+json``), through the ``jsonpatch`` library;
- FHIRPath Patch (https://hl7.org/fhir/R4/fhirpatch.html): a ``Parameters`` resource whose ``operation``
  parameters add, insert, delete, replace or move elements located by FHIRPath expressions.

Only the FHIRPath subset patches use in practice is located here: ``Type.element.element``, ``[n]``,
``first()``, ``last()``, ``where(criteria)`` (criteria evaluated by fhirpathpy) and ``ofType(Type)``.
Anything else is refused with 400 rather than guessed at.

The result is not validated: the caller validates it like any other write. ``resourceType``, ``id``,
``meta.versionId`` and ``meta.lastUpdated`` are the server's, so a patch changing them is refused (422).
"""
from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fhirpathpy
import jsonpatch
from fhirpathpy.models import models

from ..errors import BadRequest, FhirError, Unprocessable, UnsupportedMediaType
from . import jsonio
from .schema import RESOURCE_TYPES
from .schema import _schema as _fhir_schema  # the R4 JSON schema: which elements repeat, their types

JSON_PATCH = "application/json-patch+json"
FHIR_JSON = ("application/fhir+json", "application/json")
OPERATION_TYPES = ("add", "insert", "delete", "replace", "move")
_SERVER_OWNED_META = ("versionId", "lastUpdated")
_R4 = models["r4"]


def apply_patch(resource: dict[str, Any], body: bytes, content_type: str) -> dict[str, Any]:
    """Return the patched copy of ``resource`` (never mutate the input)."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media == JSON_PATCH:
        patched = _json_patch(resource, _parse(body))
    elif media in FHIR_JSON:
        patched = _fhirpath_patch(resource, _parse(body))
    else:
        raise UnsupportedMediaType(
            f"PATCH takes a JSON Patch ({JSON_PATCH}) or a FHIRPath Patch Parameters resource "
            f"({' or '.join(FHIR_JSON)}), not {media or 'a body without Content-Type'}")
    _check_server_owned(resource, patched)
    return patched


def _parse(body: bytes) -> Any:
    try:
        return jsonio.loads(body)
    except ValueError as exc:  # orjson's and simplejson's decode errors are ValueErrors
        raise BadRequest(f"the patch body is not valid JSON: {exc}") from exc


def _check_server_owned(original: dict[str, Any], patched: Any) -> None:
    if not isinstance(patched, dict) or patched.get("resourceType") != original.get("resourceType"):
        raise Unprocessable(f"a patch may not change resourceType ({original.get('resourceType')})")
    if patched.get("id") != original.get("id"):
        raise Unprocessable("a patch may not change the resource id")
    before, after = _meta(original), _meta(patched)
    for element in _SERVER_OWNED_META:
        if before.get(element) != after.get(element):
            raise Unprocessable(f"a patch may not change meta.{element}: the server sets it on every write")


def _meta(resource: dict[str, Any]) -> dict[str, Any]:
    meta = resource.get("meta")
    return meta if isinstance(meta, dict) else {}


# --- JSON Patch ------------------------------------------------------------------------------------

def _json_patch(resource: dict[str, Any], operations: Any) -> Any:
    _check_json_patch(operations)
    try:
        return jsonpatch.JsonPatch(operations).apply(resource)  # works on a deep copy
    except jsonpatch.JsonPatchTestFailed as exc:
        raise Unprocessable(f"JSON Patch test operation failed: {exc}") from exc
    except jsonpatch.InvalidJsonPatch as exc:
        raise BadRequest(f"invalid JSON Patch: {exc}") from exc
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        raise Unprocessable(f"JSON Patch cannot be applied to this resource: {exc}") from exc


def _check_json_patch(operations: Any) -> None:
    """Shape errors jsonpatch would report as TypeErrors or as missing members (400, not 422)."""
    if not isinstance(operations, list):
        raise BadRequest("a JSON Patch document is a JSON array of operations")
    for number, operation in enumerate(operations, 1):
        if not isinstance(operation, dict):
            raise BadRequest(f"JSON Patch operation {number} is not a JSON object")
        for member in ("path", "from"):
            pointer = operation.get(member, "")
            if not isinstance(pointer, str) or (pointer and not pointer.startswith("/")):
                raise BadRequest(f"JSON Patch operation {number}: {member} {pointer!r} is not a JSON pointer")


# --- FHIRPath Patch: the Parameters body -----------------------------------------------------------

def _fhirpath_patch(resource: dict[str, Any], parameters: Any) -> dict[str, Any]:
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        raise BadRequest("a FHIRPath Patch body is a Parameters resource")
    operations = parameters.get("parameter", [])
    if not isinstance(operations, list):
        raise BadRequest("Parameters.parameter must be an array")
    patched = copy.deepcopy(resource)
    for number, parameter in enumerate(operations, 1):
        try:
            _apply_operation(patched, _parts(parameter))
        except FhirError as exc:
            raise type(exc)(f"FHIRPath Patch operation {number}: {exc}") from exc
    _prune(patched)
    return patched


def _parts(parameter: Any) -> dict[str, dict[str, Any]]:
    """An ``operation`` parameter's parts by name."""
    if not isinstance(parameter, dict) or parameter.get("name") != "operation":
        raise BadRequest("every parameter of a FHIRPath Patch is named 'operation'")
    if not isinstance(parameter.get("part"), list):
        raise BadRequest("an operation's parts are an array")
    parts: dict[str, dict[str, Any]] = {}
    for part in parameter["part"]:
        name = part.get("name") if isinstance(part, dict) else None
        if not isinstance(name, str):
            raise BadRequest("every part of an operation has a name")
        if name in parts:
            raise BadRequest(f"the operation has two '{name}' parts")
        parts[name] = part
    return parts


def _required(parts: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    if name not in parts:
        raise BadRequest(f"the operation has no '{name}' part")
    return parts[name]


def _string(parts: dict[str, dict[str, Any]], name: str, key: str = "valueString") -> str:
    value = _required(parts, name).get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"the '{name}' part needs a {key}")
    return value


def _integer(parts: dict[str, dict[str, Any]], name: str) -> int:
    value = _required(parts, name).get("valueInteger")
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"the '{name}' part needs a valueInteger")
    return value


def _value(part: dict[str, Any], element_type: str | None) -> tuple[Any, str | None]:
    """A value part's content and its FHIR type (``valueHumanName`` -> HumanName); complex values
    given as nested parts are built as ``element_type`` objects."""
    for key, value in part.items():
        if key.startswith("value") and key[5:6].isupper():
            return value, key[5:]
    if isinstance(part.get("resource"), dict):
        return part["resource"], part["resource"].get("resourceType")
    if isinstance(part.get("part"), list):
        return _build(part["part"], element_type), element_type
    raise BadRequest(f"the '{part.get('name')}' part has no value[x], resource or part")


def _build(parts: list[Any], element_type: str | None) -> dict[str, Any]:
    """An object from parts named like its elements (the spec's form for complex values)."""
    built: dict[str, Any] = {}
    for part in parts:
        name = part.get("name") if isinstance(part, dict) else None
        if not isinstance(name, str):
            raise BadRequest("every part of a complex value has a name")
        value, value_type = _value(part, _element(element_type, name)[0])
        key = _key(element_type, name, value_type)
        if _repeats(element_type, key, built.get(key)):
            built.setdefault(key, []).append(value)
        elif key in built:
            raise Unprocessable(f"{element_type or 'the value'}.{key} does not repeat but is given twice")
        else:
            built[key] = value
    return built


# --- FHIRPath Patch: the operations ----------------------------------------------------------------

def _apply_operation(resource: dict[str, Any], parts: dict[str, dict[str, Any]]) -> None:
    kind = _string(parts, "type", "valueCode")
    path = _string(parts, "path")
    if kind == "add":
        _add(resource, path, _string(parts, "name"), _required(parts, "value"))
    elif kind == "insert":
        _insert(resource, path, _required(parts, "value"), _integer(parts, "index"))
    elif kind == "delete":
        _delete(resource, path)
    elif kind == "replace":
        _replace(resource, path, _required(parts, "value"))
    elif kind == "move":
        _move(resource, path, _integer(parts, "source"), _integer(parts, "destination"))
    else:
        raise BadRequest(f"unknown operation type {kind!r}: expected one of {', '.join(OPERATION_TYPES)}")


def _add(resource: dict[str, Any], path: str, name: str, value_part: dict[str, Any]) -> None:
    """Append ``name`` to the one element at ``path``; a non-repeating element only if absent."""
    target = _single(resource, path)
    if not isinstance(target.value, dict):
        raise Unprocessable(f"{path} is a primitive value: elements can only be added to a complex one")
    value, value_type = _value(value_part, _element(target.type, name)[0])
    key = _key(target.type, name, value_type)
    if _repeats(target.type, key, target.value.get(key)):
        items = target.value.setdefault(key, [])
        if not isinstance(items, list):
            raise Unprocessable(f"{path}.{key} is not a list")
        items.append(value)
        return
    if _children(target, name):
        raise Unprocessable(f"{path}.{name} already exists and does not repeat: use replace")
    target.value[key] = value


def _insert(resource: dict[str, Any], path: str, value_part: dict[str, Any], index: int) -> None:
    parent, key, items = _list_at(resource, path)
    if not 0 <= index <= len(items):
        raise Unprocessable(f"index {index} is outside {path}, which has {len(items)} item(s)")
    value, _ = _value(value_part, _element(parent.type, key)[0])
    items.insert(index, value)
    parent.value[key] = items
    _mirror_extensions(parent.value, key, lambda shadow: shadow.insert(index, None))


def _move(resource: dict[str, Any], path: str, source: int, destination: int) -> None:
    parent, key, items = _list_at(resource, path)
    for name, index in (("source", source), ("destination", destination)):
        if not 0 <= index < len(items):
            raise Unprocessable(f"{name} {index} is outside {path}, which has {len(items)} item(s)")

    def move(sequence: list[Any]) -> None:
        sequence.insert(destination, sequence.pop(source))

    move(items)
    _mirror_extensions(parent.value, key, move)


def _delete(resource: dict[str, Any], path: str) -> None:
    """Delete the element at ``path``; none there is not an error (the spec: "if found")."""
    found = _locate(resource, path)
    if not found:
        return
    node = _one(found, path)
    if node.parent is None or node.key is None:
        raise Unprocessable("a patch cannot delete the resource itself")
    parent, key = node.parent, node.key
    if node.index is None:
        del parent[key]
        parent.pop(f"_{key}", None)
        return
    index = node.index
    parent[key].pop(index)
    _mirror_extensions(parent, key, lambda shadow: shadow.pop(index))


def _replace(resource: dict[str, Any], path: str, value_part: dict[str, Any]) -> None:
    node = _single(resource, path)
    if node.parent is None or node.key is None:
        raise Unprocessable("a patch cannot replace the resource itself: use update (PUT)")
    value, value_type = _value(value_part, node.type)
    _check_type(node, value_type, path)
    if node.index is not None:
        node.parent[node.key][node.index] = value
    elif node.choice and value_type and node.key != _choice_key(node.choice, value_type):
        # deceasedBoolean replaced by a dateTime becomes deceasedDateTime
        del node.parent[node.key]
        node.parent.pop(f"_{node.key}", None)
        node.parent[_choice_key(node.choice, value_type)] = value
    else:
        node.parent[node.key] = value


def _check_type(node: _Node, value_type: str | None, path: str) -> None:
    """Refuse a complex value of the wrong data type (a Coding for a HumanName); primitives and
    resources are left to validation, which knows their profiles."""
    expected = node.type
    if (not expected or not value_type or node.choice or expected in RESOURCE_TYPES
            or not expected[0].isupper() or value_type in RESOURCE_TYPES):
        return
    if value_type != expected:
        raise Unprocessable(f"{path} is a {expected}, not a {value_type}")


def _list_at(resource: dict[str, Any], path: str) -> tuple[_Node, str, list[Any]]:
    """The list ``path`` names (insert and move): its one parent element, its key and its items."""
    steps = _steps(path)
    if len(steps) < 2 or steps[-1][0] != "child":
        raise BadRequest(f"{path} must end with the name of a repeating element, such as Patient.name")
    key = steps[-1][1]
    parent = _one(_resolve(resource, steps[:-1], path), path.rsplit(".", 1)[0])
    if not isinstance(parent.value, dict) or _element(parent.type, key)[1] is False:
        raise Unprocessable(f"{path} is not a repeating element")
    items = parent.value.get(key, [])
    if not isinstance(items, list):
        raise Unprocessable(f"{path} is not a list")
    return parent, key, items


def _mirror_extensions(parent: dict[str, Any], key: str, change: Callable[[list[Any]], Any]) -> None:
    """Keep ``_given`` (the primitives' ids and extensions) in step with ``given``."""
    shadow = parent.get(f"_{key}")
    if isinstance(shadow, list):
        change(shadow)


def _prune(node: Any) -> None:
    """FHIR JSON has no empty objects or arrays (json.html): drop those a delete left behind."""
    if isinstance(node, dict):
        for key in list(node):
            _prune(node[key])
            value = node[key]
            if value is None or value == {} or (isinstance(value, list) and all(v is None for v in value)):
                del node[key]
    elif isinstance(node, list):
        for index, item in enumerate(node):
            _prune(item)
            if item == {}:
                node[index] = None


# --- FHIRPath Patch: locating elements -------------------------------------------------------------

@dataclass
class _Node:
    """One element found by a path, with what is needed to change it in place."""

    value: Any
    type: str | None  # its data type or resource type (a schema definition name); None if unknown
    parent: dict[str, Any] | None = None  # None for the resource itself
    key: str | None = None  # its JSON property in parent
    index: int | None = None  # its position when parent[key] is a list
    choice: str | None = None  # the name it was reached by when a choice element (deceased[x])


Step = tuple[str, str]  # (kind, argument): child, index, first, last, where, ofType

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|`[^`]+`")
_FUNCTIONS = ("first", "last", "where", "ofType")


def _single(resource: dict[str, Any], path: str) -> _Node:
    return _one(_locate(resource, path), path)


def _one(found: list[_Node], path: str) -> _Node:
    if len(found) != 1:
        what = "no element" if not found else f"{len(found)} elements"
        raise Unprocessable(f"{path} resolves to {what}; the operation needs exactly one")
    return found[0]


def _locate(resource: dict[str, Any], path: str) -> list[_Node]:
    return _resolve(resource, _steps(path), path)


def _unsupported(path: str, why: str) -> BadRequest:
    return BadRequest(f"unsupported FHIRPath Patch path {path!r}: {why} (supported: Type.element, [n], "
                      f"first(), last(), where(criteria), ofType(Type))")


def _steps(path: str) -> list[Step]:
    """Parse the supported subset; the first step is the resource type or a top-level element."""
    path = path.strip()
    match = _IDENTIFIER.match(path)
    if not match:
        raise _unsupported(path, "it must start with a resource type or element name")
    steps: list[Step] = [("child", match.group().strip("`"))]
    position = match.end()
    while position < len(path):
        if path[position] == "[":
            end = path.find("]", position)
            number = path[position + 1:end] if end > 0 else ""
            if not number.isdigit():
                raise _unsupported(path, "an indexer must be a non-negative integer")
            steps.append(("index", number))
            position = end + 1
            continue
        match = _IDENTIFIER.match(path, position + 1) if path[position] == "." else None
        if not match:
            raise _unsupported(path, f"unexpected {path[position:]!r}")
        name, position = match.group().strip("`"), match.end()
        if position < len(path) and path[position] == "(":
            argument, position = _arguments(path, position)
            steps.append(_function(path, name, argument))
        else:
            steps.append(("child", name))
    return steps


def _arguments(path: str, start: int) -> tuple[str, int]:
    """The text between the parenthesis at ``start`` and its match (quoted strings skipped)."""
    depth, position, quote = 0, start, ""
    while position < len(path):
        char = path[position]
        if quote:
            if char == "\\":
                position += 1
            elif char == quote:
                quote = ""
        elif char in "'`\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return path[start + 1:position].strip(), position + 1
        position += 1
    raise _unsupported(path, "unbalanced parentheses")


def _function(path: str, name: str, argument: str) -> Step:
    if name not in _FUNCTIONS:
        raise _unsupported(path, f"function {name}() is not supported")
    if name in ("first", "last") and argument:
        raise _unsupported(path, f"{name}() takes no argument")
    if name == "where" and not argument:
        raise _unsupported(path, "where() needs criteria")
    if name == "ofType":
        argument = argument.removeprefix("FHIR.").removeprefix("System.")
        if not _IDENTIFIER.fullmatch(argument):
            raise _unsupported(path, f"ofType() needs a type name, not {argument!r}")
    return name, argument


def _resolve(resource: dict[str, Any], steps: list[Step], path: str) -> list[_Node]:
    root = _Node(resource, resource.get("resourceType"))
    first = steps[0][1]
    if first == root.type:
        nodes = [root]
    elif first in RESOURCE_TYPES:
        nodes = []  # Observation.status on a Patient: nothing, as FHIRPath says
    else:
        nodes = _children(root, first)
    for kind, argument in steps[1:]:
        if kind == "child":
            nodes = [child for node in nodes for child in _children(node, argument)]
        elif kind == "index":
            nodes = nodes[int(argument):int(argument) + 1]
        elif kind == "first":
            nodes = nodes[:1]
        elif kind == "last":
            nodes = nodes[-1:]
        elif kind == "where":
            nodes = [node for node in nodes if _matches(node, argument, path)]
        else:  # ofType
            nodes = [node for node in nodes if node.type and node.type.casefold() == argument.casefold()]
    return nodes


def _matches(node: _Node, criteria: str, path: str) -> bool:
    try:
        result = fhirpathpy.evaluate(node.value, criteria, {}, _R4)
    except Exception as exc:  # fhirpathpy raises bare Exceptions for what it cannot parse or run
        raise _unsupported(path, f"where({criteria}) cannot be evaluated: {exc}") from exc
    return bool(result == [True])


def _children(node: _Node, name: str) -> list[_Node]:
    """The elements called ``name`` under ``node``; a choice name (deceased) finds deceasedBoolean."""
    if not isinstance(node.value, dict):
        return []
    if name in node.value:
        return _nodes(node, name, _element(node.type, name)[0], None)
    for key in node.value:
        suffix = key[len(name):]
        if key.startswith(name) and suffix[:1].isupper() and _data_type(suffix):
            return _nodes(node, key, _data_type(suffix), name)
    return []


def _nodes(parent: _Node, key: str, element_type: str | None, choice: str | None) -> list[_Node]:
    value = parent.value[key]
    if isinstance(value, list):
        return [_Node(item, _typed(element_type, item), parent.value, key, index, choice)
                for index, item in enumerate(value)]
    return [_Node(value, _typed(element_type, value), parent.value, key, None, choice)]


def _typed(element_type: str | None, value: Any) -> str | None:
    """A contained resource's type is its resourceType."""
    if element_type == "ResourceList" and isinstance(value, dict):
        return value.get("resourceType")
    return element_type


# --- the R4 JSON schema: element types and cardinality ---------------------------------------------

def _properties(type_name: str | None) -> dict[str, Any] | None:
    definition = _fhir_schema()["definitions"].get(type_name) if type_name else None
    return definition.get("properties") if isinstance(definition, dict) else None


def _element(type_name: str | None, key: str) -> tuple[str | None, bool | None]:
    """(data type, repeats) of element ``key`` of ``type_name``; None where the schema does not say."""
    properties = _properties(type_name)
    if properties is None or key not in properties:
        return None, None
    prop = properties[key]
    repeats = prop.get("type") == "array"
    reference = (prop.get("items", {}) if repeats else prop).get("$ref", "")
    if reference:
        return reference.rsplit("/", 1)[-1], repeats
    return None, repeats


def _repeats(type_name: str | None, key: str, current: Any) -> bool:
    repeats = _element(type_name, key)[1]
    return isinstance(current, list) if repeats is None else repeats


def _key(type_name: str | None, name: str, value_type: str | None) -> str:
    """The JSON property for element ``name`` given a ``value_type`` value: deceased + Boolean."""
    properties = _properties(type_name)
    if properties is None or name in properties:
        return name
    if value_type and _choice_key(name, value_type) in properties:
        return _choice_key(name, value_type)
    raise Unprocessable(f"{type_name} has no element {name!r}"
                        + (f" of type {value_type}" if value_type else ""))


def _choice_key(name: str, value_type: str) -> str:
    return name + value_type[:1].upper() + value_type[1:]


def _data_type(suffix: str) -> str | None:
    """``DateTime`` -> dateTime, ``Quantity`` -> Quantity: the type a choice element's suffix names."""
    definitions = _fhir_schema()["definitions"]
    for candidate in (suffix, suffix[:1].lower() + suffix[1:]):
        if candidate in definitions:
            return candidate
    return None
