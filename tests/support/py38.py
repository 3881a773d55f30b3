"""What Python 3.8 cannot run, found in source text without a 3.8 interpreter.

`ast.parse(..., feature_version=(3, 8))` refuses most newer grammar (match, except*,
walrus in comprehension iterables...), but not all of it, and none of the newer library:
this module looks for the rest. `problems(source)` lists (line, what) for

- grammar that feature_version lets through: parenthesized context managers with `as`
  inside the parentheses (3.9), decorators that are arbitrary expressions (3.9);
- annotations that are evaluated at run time (no `from __future__ import annotations`)
  and use builtin generics (`list[int]`, 3.9) or `X | Y` (3.10); builtin generics are
  also refused outside annotations, where 3.8 evaluates them too;
- methods, module attributes, modules and keyword arguments added in 3.9 and later
  (the tables below: the ones a standard-library-only tool is likely to reach for);
- `{...} | {...}` / `|=` on a dict display or `dict(...)` call (dict union, 3.9);
- regular-expression syntax of 3.11 (atomic groups, possessive quantifiers) in string
  constants passed to `re` functions.

It errs on the side of naming a construct: a name that shadows a builtin (`list = ...`)
would be a false alarm, which the caller sees with its line number.
"""

import ast
import io
import re
import tokenize

BUILTIN_GENERICS = {"list", "dict", "tuple", "set", "frozenset", "type"}

# str/bytes/pathlib/int methods added in 3.9+: `.name(` on anything is flagged
NEW_METHODS = {
    "removeprefix": "3.9", "removesuffix": "3.9", "is_relative_to": "3.9", "with_stem": "3.9",
    "readlink": "3.9", "bit_count": "3.10", "hardlink_to": "3.10", "is_junction": "3.12",
}
# Path.readlink (3.9) has the same name as os.readlink (always there): flag it only on
# something that is not the os module
METHODS_ALSO_IN_OS = {"readlink"}

NEW_ATTRIBUTES = {  # module -> {attribute: version}
    "math": {"lcm": "3.9", "nextafter": "3.9", "ulp": "3.9", "cbrt": "3.11", "exp2": "3.11",
             "sumprod": "3.12"},
    "functools": {"cache": "3.9"},
    "os": {"waitstatus_to_exitcode": "3.9", "pidfd_open": "3.9", "splice": "3.10",
           "eventfd": "3.10", "EFD_CLOEXEC": "3.10", "login_tty": "3.11", "process_cpu_count": "3.13"},
    "random": {"randbytes": "3.9", "binomialvariate": "3.12"},
    "itertools": {"pairwise": "3.10", "batched": "3.12"},
    "contextlib": {"chdir": "3.11", "aclosing": "3.10"},
    "hashlib": {"file_digest": "3.11"},
    "datetime": {"UTC": "3.11"},
    "enum": {"StrEnum": "3.11", "verify": "3.11"},
    "ast": {"unparse": "3.9"},
    "sys": {"orig_argv": "3.10", "stdlib_module_names": "3.10", "platlibdir": "3.9",
            "exception": "3.11", "activate_stack_trampoline": "3.12"},
    "statistics": {"correlation": "3.10", "covariance": "3.10", "linear_regression": "3.10",
                   "kde": "3.13"},
    "signal": {"pidfd_send_signal": "3.9"},
    "typing": {"Annotated": "3.9", "ParamSpec": "3.10", "TypeAlias": "3.10", "Self": "3.11",
               "LiteralString": "3.11", "Never": "3.11", "assert_never": "3.11", "override": "3.12"},
    "threading": {"gettrace": "3.10", "getprofile": "3.10"},
    "types": {"GenericAlias": "3.9", "NoneType": "3.10", "EllipsisType": "3.10",
              "NotImplementedType": "3.10"},
    "fcntl": {"F_GETPIPE_SZ": "3.10", "F_SETPIPE_SZ": "3.10"},
    "inspect": {"get_annotations": "3.10"},
    "operator": {"call": "3.11"},
    "argparse": {"BooleanOptionalAction": "3.9"},
}
NEW_MODULES = {"zoneinfo": "3.9", "graphlib": "3.9", "tomllib": "3.11"}
NEW_BUILTINS = {"aiter": "3.10", "anext": "3.10", "EncodingWarning": "3.10", "ExceptionGroup": "3.11",
                "BaseExceptionGroup": "3.11"}

# (callable's last name, keyword) -> version; a call is matched by the name it is called
# through (`zip(...)`, `subprocess.run(...)`, `dataclasses.dataclass(...)`)
NEW_KEYWORDS = {
    ("zip", "strict"): "3.10",
    ("dataclass", "slots"): "3.10", ("dataclass", "kw_only"): "3.10",
    ("run", "process_group"): "3.11", ("Popen", "process_group"): "3.11",
    ("run", "pipesize"): "3.10", ("Popen", "pipesize"): "3.10",
    ("run", "user"): "3.9", ("Popen", "user"): "3.9", ("run", "group"): "3.9",
    ("Popen", "group"): "3.9", ("run", "extra_groups"): "3.9", ("Popen", "extra_groups"): "3.9",
    ("run", "umask"): "3.9", ("Popen", "umask"): "3.9",
    ("bisect", "key"): "3.10", ("bisect_left", "key"): "3.10", ("bisect_right", "key"): "3.10",
    ("insort", "key"): "3.10", ("insort_left", "key"): "3.10", ("insort_right", "key"): "3.10",
    ("md5", "usedforsecurity"): "3.9", ("sha1", "usedforsecurity"): "3.9",
    ("sha256", "usedforsecurity"): "3.9", ("new", "usedforsecurity"): "3.9",
    ("TemporaryDirectory", "ignore_cleanup_errors"): "3.10",
    ("TemporaryDirectory", "delete"): "3.12", ("NamedTemporaryFile", "delete_on_close"): "3.12",
    ("ArgumentParser", "exit_on_error"): "3.9",
    ("rmtree", "onexc"): "3.12", ("rmtree", "dir_fd"): "3.11",
    ("glob", "include_hidden"): "3.11", ("iglob", "include_hidden"): "3.11",
    ("glob", "root_dir"): "3.10", ("iglob", "root_dir"): "3.10",
    ("write_text", "newline"): "3.10",
    ("read_text", "newline"): "3.13",
    ("exists", "follow_symlinks"): "3.12",
}

# 3.11 regular-expression syntax: atomic groups (?>...) and possessive quantifiers *+ ++ ?+ }+
_NEW_REGEX = re.compile(r"\(\?>|(?<!\\)[*+?}]\+")
RE_FUNCTIONS = {"compile", "match", "search", "fullmatch", "findall", "finditer", "sub", "subn",
                "split"}


def _dotted(node):
    """`a.b.c` -> "a.b.c" for a chain of names, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _call_name(func):
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _is_dict_expr(node):
    return isinstance(node, (ast.Dict, ast.DictComp)) or (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict")


def _nodes(tree, postponed):
    """Every node once, with whether 3.8 evaluates it: not when it sits in an annotation
    that is never evaluated (a local variable's, or any under `from __future__ import
    annotations`); yields (node, evaluated, in_annotation)."""
    stack = [(tree, True, False, False)]  # node, evaluated, in annotation, in function
    while stack:
        node, evaluated, annotation, in_function = stack.pop()
        yield node, evaluated, annotation
        function = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        inside = in_function or function
        if isinstance(node, ast.ClassDef):
            inside = False
        for field, value in ast.iter_fields(node):
            children = value if isinstance(value, list) else [value]
            is_annotation = (field == "annotation" or (field == "returns" and function))
            for child in children:
                if not isinstance(child, ast.AST):
                    continue
                if is_annotation and not annotation:
                    local = isinstance(node, ast.AnnAssign) and in_function
                    stack.append((child, evaluated and not postponed and not local, True, inside))
                else:
                    stack.append((child, evaluated, annotation, inside))


def _decorator_ok(node):
    """3.8's grammar: a dotted name, optionally called once."""
    if isinstance(node, ast.Call):
        node = node.func
    return _dotted(node) is not None


def _parenthesized_with(source):
    """Lines of `with (... as ...):` / `with (a, b):` forms that need 3.9's grammar:
    an `as` or a top-level comma inside the parentheses that open right after `with`."""
    lines = []
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
              if t.type not in (tokenize.NL, tokenize.COMMENT, tokenize.NEWLINE, tokenize.INDENT,
                                tokenize.DEDENT)]
    for index, token in enumerate(tokens[:-1]):
        if not (token.type == tokenize.NAME and token.string == "with"
                and tokens[index + 1].string == "("):
            continue
        depth, found = 0, False
        for inner in tokens[index + 1:]:
            if inner.string in "([{" and inner.type == tokenize.OP:
                depth += 1
            elif inner.string in ")]}" and inner.type == tokenize.OP:
                depth -= 1
                if depth == 0:
                    break
            elif depth == 1 and (inner.string == "as" or inner.string == ","):
                found = True
        if found:
            lines.append(token.start[0])
    return lines


def problems(source, filename="<source>"):
    """[(line, text)] of what Python 3.8 cannot run; [] when none. Raises SyntaxError
    when the source is not 3.8 grammar at all (ast with feature_version=(3, 8))."""
    tree = ast.parse(source, filename, feature_version=(3, 8))
    postponed = any(isinstance(node, ast.ImportFrom) and node.module == "__future__"
                    and any(alias.name == "annotations" for alias in node.names)
                    for node in tree.body)
    aliases = {}  # a name bound by `import x` / `import x as y` -> the module's name
    for node in tree.body:  # module-level imports (where a tool imports its modules)
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0])
    found = []
    for node, evaluated, annotation in _nodes(tree, postponed):
        line = getattr(node, "lineno", 0)
        if not evaluated:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                if root in NEW_MODULES:
                    found.append((line, "module %s (Python %s)" % (root, NEW_MODULES[root])))
        elif isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            if root in NEW_MODULES:
                found.append((line, "module %s (Python %s)" % (root, NEW_MODULES[root])))
            for alias in node.names:
                version = NEW_ATTRIBUTES.get(node.module, {}).get(alias.name)
                if version:
                    found.append((line, "%s.%s (Python %s)" % (node.module, alias.name, version)))
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) \
                and node.value.id in BUILTIN_GENERICS:
            found.append((line, "%s[...] (builtin generic, Python 3.9)" % node.value.id))
        elif isinstance(node, ast.Attribute):
            dotted = _dotted(node.value)
            module = aliases.get(dotted, dotted) if dotted else None
            version = NEW_ATTRIBUTES.get(module, {}).get(node.attr) if module else None
            if version:
                found.append((line, "%s.%s (Python %s)" % (module, node.attr, version)))
        elif isinstance(node, ast.Name) and node.id in NEW_BUILTINS and isinstance(node.ctx, ast.Load):
            found.append((line, "builtin %s (Python %s)" % (node.id, NEW_BUILTINS[node.id])))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for decorator in node.decorator_list:
                if not _decorator_ok(decorator):
                    found.append((decorator.lineno, "decorator expression (Python 3.9)"))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            if annotation:
                found.append((line, "X | Y in an evaluated annotation (Python 3.10)"))
            elif _is_dict_expr(node.left) or _is_dict_expr(node.right):
                found.append((line, "dict | dict (Python 3.9)"))
        elif isinstance(node, ast.AugAssign) and isinstance(node.op, ast.BitOr) and _is_dict_expr(node.value):
            found.append((line, "dict |= dict (Python 3.9)"))
        elif isinstance(node, ast.Call):
            found.extend((line, what) for what in _call_problems(node, aliases))
    if re.search(r"\bwith\s*\(", source):
        found.extend((line, "parenthesized context managers (Python 3.9)")
                     for line in _parenthesized_with(source))
    return sorted(set(found))


def _call_problems(node, aliases):
    """A call's 3.9+ method, keyword argument or regex syntax."""
    name = _call_name(node.func)
    if isinstance(node.func, ast.Attribute) and name in NEW_METHODS:
        owner = _dotted(node.func.value)
        if not (name in METHODS_ALSO_IN_OS and aliases.get(owner, owner) == "os"):
            yield ".%s() (Python %s)" % (name, NEW_METHODS[name])
    for keyword in node.keywords:
        version = NEW_KEYWORDS.get((name, keyword.arg))
        if version:
            yield "%s(%s=...) (Python %s)" % (name, keyword.arg, version)
    if name in RE_FUNCTIONS and isinstance(node.func, ast.Attribute) \
            and aliases.get(_dotted(node.func.value)) == "re" and node.args:
        pattern = node.args[0]
        if isinstance(pattern, ast.Constant) and isinstance(pattern.value, (str, bytes)):
            text = pattern.value if isinstance(pattern.value, str) else pattern.value.decode("latin-1")
            if _NEW_REGEX.search(text):
                yield "atomic group or possessive quantifier in a regex (Python 3.11)"
