"""User mistakes end in one ``kgfact: error:`` line and exit status 2, never a traceback: each
class of mistake by example, then Hypothesis generating command lines and TOML configs."""

from __future__ import annotations

import json
import string
import sys
import tempfile
from dataclasses import fields
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kgfact.cli import main
from kgfact.errors import KgfactError
from kgfact.rundir import RunDir
from kgfact.slick import SlickConfig

# nothing listens on port 1: a build against it fails at once, so no generated input starts work
DEAD_ENDPOINT = "http://127.0.0.1:1/sparql"


def run_cli(capsys, argv: list[str]) -> tuple[int, str]:
    """Exit status and stderr of ``kgfact ARGV`` run in-process (argparse exits included)."""
    import torch

    threads = torch.get_num_threads()  # a config's `threads` must not leak into other tests
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    finally:
        torch.set_num_threads(threads)
    return code, capsys.readouterr().err


def assert_one_error(code: int, err: str, expected: str | None = None) -> None:
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("kgfact: error:")]
    assert code == 2 and len(errors) == 1, err
    if expected is not None:
        assert expected in errors[0], errors[0]


def make_fake_run(path: Path) -> Path:
    """A run with a manifest and no tables: every stage stops at its first missing table."""
    run = RunDir(path).create()
    with run.stage("build", {"source": "none"}):
        pass
    return run.path


@pytest.fixture
def fake_run(tmp_path) -> Path:
    return make_fake_run(tmp_path / "run")


@pytest.mark.parametrize("argv, expected", [
    (["build", "--endpoint", DEAD_ENDPOINT, "--max-questions", "-1"],
     "max_questions_per_relation must be >= 1, got -1"),
    (["build", "--endpoint", DEAD_ENDPOINT, "--timeout", "inf"],
     "timeout must be a finite number, got inf"),
    (["build", "--endpoint", DEAD_ENDPOINT, "--timeout", "nan"],
     "timeout must be a finite number, got nan"),
    (["build", "--endpoint", DEAD_ENDPOINT, "--page-size", "0"], "page_size must be >= 1"),
    # numbers too large for the socket clock and torch's seed
    (["build", "--endpoint", DEAD_ENDPOINT, "--timeout", "1e12"],
     "timeout must be <= 86400, got 1000000000000.0"),
    (["slick", "RUN", "--seed", str(2**64)],
     f"seed must be <= {2**63 - 1}, got {2**64}"),
    (["slick", "RUN", "--temperature", "-1"], "temperature must be >= 0.001, got -1.0"),
    # a temperature this small overflowed the sampler's softmax into NaN probabilities
    (["slick", "RUN", "--temperature", "5e-324"],
     "[slick.sampling]: temperature must be >= 0.001, got 5e-324"),
    (["slick", "RUN", "--samples", "0"], "SliCK needs sampled answers"),  # was all Unknown
    # backend flags are checked as a config's [backend] table is (a negative chunk once meant
    # no questions and exit 0; a zero batch a traceback after the model loaded)
    (["slick", "RUN", "--chunk", "-1"], "chunk_size must be >= 1, got -1"),
    (["evaluate", "RUN", "--batch", "0"], "max_batch must be >= 1, got 0"),
    (["slick", "RUN", "--workers", "2"], "address and workers are for the ray backend, not "
                                         "'kgfact'"),
    (["finetune", "RUN", "--sets", "../../x"], "'../../x' is not a valid name"),
    (["finetune", "RUN", "--lr", "0"], "learning_rate must be > 0"),
    (["evaluate", "RUN", "--sets", "a/b"], "'a/b' is not a valid name"),
    (["evaluate", "RUN", "--prompts", "0"], "n_prompts must be >= 1"),
    (["ftsets", "RUN", "--shares", "0,1.5"], "unknown_shares must be <= 1"),
    # lists that would do nothing (an empty list of modes was a traceback), or name a thing twice
    (["evaluate", "RUN", "--modes", ","], "modes must not be empty"),
    (["slick", "RUN", "--splits", ","], "splits must not be empty"),
    (["evaluate", "RUN", "--sets", "ft-known,ft-known"], "sets lists 'ft-known' twice"),
    (["ftsets", "RUN", "--shares", "0,0"], "unknown_shares lists 0.0 twice"),
    (["ftsets", "RUN", "--shares", "0.5,0.501"], "0.5 and 0.501 both give the set mix-50"),
    (["slick"], "the following arguments are required: run"),
    (["evaluate", "RUN", "--shots", "two"], "invalid int value: 'two'"),
])
def test_out_of_range_and_malformed_values(capsys, fake_run, argv, expected):
    argv = [str(fake_run) if a == "RUN" else a for a in argv]
    assert_one_error(*run_cli(capsys, argv), expected)


def test_config_values_are_checked_like_flags(capsys, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f'threads = 0\n[build]\nendpoint = "{DEAD_ENDPOINT}"\n'
                      '[build.qa]\nin_distribution = ["P17"]\n')
    assert_one_error(*run_cli(capsys, ["run", str(config)]), "threads must be >= 1, got 0")
    config.write_text(config.read_text().replace("threads = 0", "threads = 1000000000000"))
    assert_one_error(*run_cli(capsys, ["run", str(config)]),
                     "threads must be <= 1024, got 1000000000000")
    config.write_text(f'[build]\nendpoint = "{DEAD_ENDPOINT}"\n[build.qa]\n'
                      'in_distribution = ["P17"]\n[finetune]\nsets = ["../../x"]\n')
    assert_one_error(*run_cli(capsys, ["run", str(config)]), "'../../x' is not a valid name")
    config.write_text(config.read_text().replace('[finetune]\nsets = ["../../x"]',
                                                 "[slick.sampling]\ntemperature = 5e-324"))
    assert_one_error(*run_cli(capsys, ["run", str(config)]),
                     "[slick.sampling]: temperature must be >= 0.001, got 5e-324")


# SliCK's templates were used only once the model had loaded (79 s on Gemma): each mistake
# below was a KeyError, IndexError or ValueError traceback then, or silently ignored the question
FIELDS_ARE = "its fields are {question} and {answer}"
TEMPLATE_ERRORS = [
    ("exemplar_template", "{x}", f"exemplar_template has an unknown field '{{x}}': {FIELDS_ARE}"),
    ("exemplar_template", "{0} {answer}",
     f"exemplar_template has a positional field '{{0}}': name it; {FIELDS_ARE}"),
    ("exemplar_template", "Q: {}", f"exemplar_template has a positional field '{{}}': name it; "
                                   f"{FIELDS_ARE}"),
    ("exemplar_template", "{question.upper} {answer}",
     f"exemplar_template has an unknown field '{{question.upper}}': {FIELDS_ARE}"),
    ("exemplar_template", "Q: {", "exemplar_template is not a format template: Single '{' "
     "encountered in format string (write a literal brace as {{ or }})"),
    ("exemplar_template", "{question!z} {answer}",
     "exemplar_template has an unknown conversion in '{question!z}': use !r, !s, !a or none"),
    ("exemplar_template", "{question:d} {answer}",
     "exemplar_template cannot be formatted: Unknown format code 'd' for object of type 'str'"),
    ("exemplar_template", "{question:>{answer}}",
     "exemplar_template has a field inside the format spec of '{question:>{answer}}'"),
    ("exemplar_template", "{question:>99999999999} {answer}",
     "exemplar_template pads '{question:>99999999999}' to 1000 characters or more"),
    ("exemplar_template", "Q: {question}\nA:", "exemplar_template must contain {answer}"),
    ("query_template", "{answer}",
     "query_template has an unknown field '{answer}': its field is {question}"),
    ("query_template", "Q: {question!z}",
     "query_template has an unknown conversion in '{question!z}': use !r, !s, !a or none"),
    ("query_template", "Q:\nA:", "query_template must contain {question}"),
]


@pytest.mark.parametrize("key, template, expected", TEMPLATE_ERRORS)
def test_bad_templates_are_refused_with_the_config(capsys, tmp_path, fake_run, key, template,
                                                   expected):
    # refused while the flags are read, before the run is opened or a model loaded
    argv = ["slick", str(fake_run), f"--{key.replace('_', '-')}", template]
    code, err = run_cli(capsys, argv)
    assert (code, err) == (2, f"kgfact: error: [slick]: {expected}\n")
    config = tmp_path / "c.toml"
    config.write_text(f'[build]\nendpoint = "{DEAD_ENDPOINT}"\n'
                      f'[slick]\n{key} = {_toml(template)}\n')
    code, err = run_cli(capsys, ["run", str(config)])
    assert (code, err) == (2, f"kgfact: error: {config}: [slick]: {expected}\n")


@pytest.mark.parametrize("value", ["[" * 5000 + "]" * 5000, "{a = " * 5000 + "1" + "}" * 5000])
def test_config_nested_thousands_deep(capsys, tmp_path, value):
    config = tmp_path / "c.toml"
    config.write_text(f'threads = {value}\n[build]\nendpoint = "{DEAD_ENDPOINT}"\n')
    code, err = run_cli(capsys, ["run", str(config)])
    assert (code, err) == (2, f"kgfact: error: {config} nests arrays or tables too deep to read "
                              "(a config is a few levels deep)\n")
    config.write_text(f'threads = {"9" * 5000}\n[build]\nendpoint = "{DEAD_ENDPOINT}"\n')
    code, err = run_cli(capsys, ["run", str(config)])
    assert (code, err) == (2, f"kgfact: error: {config} has an integer too long to read (over "
                              f"{sys.get_int_max_str_digits()} digits)\n")


def test_long_values_are_refused_with_short_messages(capsys, tmp_path):
    # 200,000 set names took minutes to check for repeats and the error printed them all
    names = [f"s{i}" for i in range(199_999)] + ["../" + "x" * 1000]
    config = tmp_path / "c.toml"
    config.write_text(f'[build]\nendpoint = "{DEAD_ENDPOINT}"\n[finetune]\nsets = {_toml(names)}\n')
    code, err = run_cli(capsys, ["run", str(config)])
    shown = "'../" + "x" * 57 + "'... (1003 characters)"
    assert (code, err) == (2, f"kgfact: error: {config}: [finetune]: sets: {shown} is not a valid "
                              "name: use letters, digits, '.', '_' and '-', starting with a "
                              "letter or digit (at most 64 characters)\n")
    with pytest.raises(KgfactError) as error:
        SlickConfig(relations=(*names[:199_999], 3))
    assert str(error.value) == ("relations must be a tuple of a string or None, got ('s0', 's1', "
                                "'s2', 's3', 's4', ... (200000 items))")
    config.write_text(f'[build]\nendpoint = "{DEAD_ENDPOINT}"\n[slick]\n{"k" * 100_000} = 1\n')
    code, err = run_cli(capsys, ["run", str(config)])
    assert (code, err) == (2, f"kgfact: error: {config}: unknown key slick.{'k' * 60}... "
                              "(100000 characters); valid keys: " + ", ".join(
                                  f.name for f in fields(SlickConfig)) + "\n")

    # argparse quotes a value it cannot read whole: the message shows its start and length
    code, err = run_cli(capsys, ["slick", str(tmp_path), "--shots", "x" * 300])
    assert (code, err) == (2, "kgfact: error: argument --shots: invalid int value: "
                              f"'{'x' * 60}... (300 characters)' (see 'kgfact slick --help')\n")


def test_argparse_errors_say_error_once(capsys):
    # they read "kgfact: error: kgfact: ..." and "kgfact: error: kgfact slick: ..."
    assert run_cli(capsys, []) == (2, "kgfact: error: the following arguments are required: "
                                      "command (see 'kgfact --help')\n")
    assert run_cli(capsys, ["slick"]) == (2, "kgfact: error: the following arguments are "
                                             "required: run (see 'kgfact slick --help')\n")


def test_help_is_plain_text(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    shown = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "``" not in shown  # it was "The ``kgfact`` command line."
    assert "Measure and explain how fine-tuning data changes what a language model gets right" \
        in shown
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    # a comma-separated flag's help showed a Python tuple, ('q_proj', 'v_proj')
    assert ("--target-modules TARGET_MODULES Modules to adapt: 'all-linear' or module names "
            "such as q_proj,v_proj. (default: all-linear)") in shown


def test_report_of_a_run_without_predictions_names_the_stage_to_run(capsys, fake_run):
    """The findings section said "run 'kgfact report' first", the very command that wrote it."""
    assert run_cli(capsys, ["report", str(fake_run)])[0] == 0
    report = (fake_run / "report.md").read_text()
    assert (f"*Not available: {fake_run}/findings.parquet does not exist: 'kgfact report' "
            "writes it from predictions, which this run lacks too: run 'kgfact build' first, "
            "then the stages after it*") in report
    for table in ("qa", "triples", "entities", "slick", "ftsets", "dynamics"):
        RunDir(fake_run).write_table(table, pd.DataFrame({"x": [1]}))
    with pytest.raises(KgfactError) as error:
        RunDir(fake_run).read_table("findings")
    assert str(error.value) == (f"{fake_run}/findings.parquet does not exist: 'kgfact report' "
                                "writes it from predictions, which this run lacks too: run "
                                "'kgfact evaluate' first")
    with pytest.raises(KgfactError) as error:
        RunDir(fake_run).read_table("predictions")
    assert str(error.value) == (f"{fake_run}/predictions.parquet does not exist: run 'kgfact "
                                "evaluate' first, the stage that writes it")


def test_repeats_are_found_in_one_pass():
    """Each item of a list is compared with few others, not every earlier one."""
    compared = []

    class Name(str):
        __hash__ = str.__hash__

        def __eq__(self, other):
            compared.append(other)
            return str.__eq__(self, other)

    relations = tuple(Name(f"P{i}") for i in range(2000))
    assert SlickConfig(relations=relations).relations == relations
    assert len(compared) < len(relations)
    with pytest.raises(KgfactError, match="^relations lists 'P7' twice$"):
        SlickConfig(relations=(*relations, Name("P7")))


def test_unreadable_configs_manifests_and_run_places(capsys, tmp_path, fake_run):
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    assert_one_error(*run_cli(capsys, ["run", str(binary)]), "is not a text file")
    assert_one_error(*run_cli(capsys, ["run", "x" * 300]), "File name too long")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert_one_error(*run_cli(capsys, ["run", "configs/smoke.toml", "--run", str(a_file)]),
                     "is a file, not a run directory")
    assert_one_error(*run_cli(capsys, ["run", "configs/smoke.toml", "--run",
                                       str(a_file / "sub")]), "cannot create run directory")
    manifest = fake_run / "manifest.json"
    for text in ("[1, 2]", '{"stages": []}', '{"stages": {"build": 3}}'):
        manifest.write_text(text)
        assert_one_error(*run_cli(capsys, ["info", str(fake_run)]), "is not a kgfact manifest")
    manifest.write_bytes(b"\xff\xfe")
    assert_one_error(*run_cli(capsys, ["info", str(fake_run)]), "is not valid JSON")
    manifest.unlink()
    manifest.mkdir()
    assert_one_error(*run_cli(capsys, ["info", str(fake_run)]), "Is a directory")


# -- generated inputs --------------------------------------------------------------------------
NUMBERS = st.one_of(st.integers(-3, 3), st.sampled_from([10**12, -(10**12)]),
                    st.floats(allow_nan=True, allow_infinity=True))
# SliCK templates, good and bad, from pieces: fields, literal and single braces, conversions, specs
TEMPLATES = st.lists(st.sampled_from(
    ["{question}", "{answer}", "Q: ", "\n", "{", "}", "{{", "}}", "{0}", "{}", "{x}", "!", ":",
     "{question!r}", "{answer!z}", "{question:d}", "{question:>5}", "{answer:.2}", "{question.x}",
     "{question:>{answer}}", "{answer:>9999}", "{question:=^3}"]), max_size=6).map("".join)
WORDS = st.one_of(TEMPLATES, st.sampled_from(["", ",", "../../x", "a/b", "ft-known", "P17", "P17,P36",
                                   "P17,P17", "zero-shot", "nope", ".hidden", "-x", "é",
                                   "1e309", "1e12", str(2**64)]),
                  st.text(string.printable.replace("\x00", ""), max_size=8))
FLAGS = {
    "build": ["--max-questions", "--max-triples", "--page-size", "--timeout", "--seed",
              "--relations", "--ood", "--split", "--leakage-filter"],
    "slick": ["--samples", "--temperature", "--top-k", "--max-new-tokens", "--prompts",
              "--shots", "--max-questions", "--batch", "--chunk", "--relations", "--splits",
              "--seed", "--backend", "--workers", "--address", "--dtype", "--device",
              "--exemplar-template", "--query-template"],
    "ftsets": ["--size", "--shares", "--relations", "--seed"],
    "finetune": ["--sets", "--epochs", "--lr", "--batch-size", "--lora-r", "--lora-alpha",
                 "--convergence-fit", "--eval-questions", "--seeds", "--target-modules",
                 "--lr-grid", "--weight-decay"],
    "evaluate": ["--sets", "--modes", "--strategies", "--shots", "--prompts",
                 "--max-questions", "--batch", "--seed", "--backend"],
    "theory": ["--known-set", "--fit-sets", "--augmentation", "--neighbourhood-hops",
               "--path-hops", "--quantiles", "--min-bucket", "--n-boot", "--seed"],
}


@st.composite
def command_lines(draw) -> list[str]:
    command = draw(st.sampled_from([*FLAGS, "info", "report", "relations", "nope"]))
    argv = [command]
    if command == "build":
        argv += ["--endpoint", DEAD_ENDPOINT, "--no-cache", "--quiet"]
    elif command != "relations":
        argv.append(draw(st.sampled_from(["RUN", "MISSING", "FILE"])))
    for flag in draw(st.lists(st.sampled_from(FLAGS.get(command, ["--bogus"])), max_size=4)):
        argv += [flag, str(draw(st.one_of(NUMBERS, WORDS)))]
    return argv


# bounded: both generated tests together take seconds (every input fails or ends fast)
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.function_scoped_fixture])


@settings(FUZZ, max_examples=120)
@given(argv=command_lines())
def test_generated_command_lines(capsys, argv):
    with tempfile.TemporaryDirectory(prefix="kgfact-fuzz-") as tmp:
        root = Path(tmp)
        (root / "file").write_text("x")
        places = {"RUN": str(make_fake_run(root / "run")), "MISSING": str(root / "missing"),
                  "FILE": str(root / "file")}
        argv = [places.get(a, a) for a in argv]
        if argv[0] == "build":
            argv += ["--run", str(root / "build")]
        code, err = run_cli(capsys, argv)
    if code != 0:
        assert_one_error(code, err)


TOML_VALUES = st.one_of(NUMBERS.filter(lambda v: v == v and abs(v) != float("inf")),
                        st.booleans(), WORDS, st.lists(st.one_of(st.integers(-2, 2), WORDS),
                                                      max_size=3))
SECTIONS = {"": ["threads", "nope"],
            "build": ["page_size", "max_triples_per_relation", "expand_hops", "timeout",
                      "entityquestions"],
            "build.qa": ["in_distribution", "out_of_distribution", "train_fraction",
                         "max_questions_per_relation", "leakage_filter", "seed"],
            "slick": ["n_prompts", "shots", "relations", "splits", "seed", "exemplar_template",
                      "query_template"],
            "slick.sampling": ["n_samples", "temperature", "top_k", "max_new_tokens"],
            "ftsets": ["size", "unknown_shares", "relabel_share"],
            "finetune": ["sets", "learning_rate", "max_epochs", "batch_size"],
            "finetune.lora": ["r", "alpha", "dropout", "target_modules"],
            "evaluate": ["sets", "modes", "strategies", "checkpoints", "shots", "n_prompts",
                         "bootstrap"],
            "theory.prediction": ["quantiles", "min_bucket", "level"],
            "model": ["name", "dtype", "device"], "backend": ["name", "workers", "max_batch", "chunk_size"]}


def _toml(value) -> str:
    return json.dumps(value)  # JSON scalars and arrays of them are TOML (no NaN, no inf)


@st.composite
def configs(draw) -> bytes:
    body = {section: {} for section in ("", "build", "build.qa")}
    body["build"]["endpoint"] = DEAD_ENDPOINT
    body["build.qa"]["in_distribution"] = ["P17"]
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from(list(SECTIONS)))
        key = draw(st.sampled_from(SECTIONS[section]))
        body.setdefault(section, {})[key] = draw(TOML_VALUES)
    lines = [f"{k} = {_toml(v)}" for k, v in body.pop("").items()]
    for section, values in body.items():
        lines += [f"[{section}]", *(f"{k} = {_toml(v)}" for k, v in values.items())]
    text = "\n".join(lines).encode()
    if draw(st.integers(0, 9)) == 0:  # now and then, odd bytes somewhere
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.binary(min_size=1, max_size=3)) + text[at:]
    return text


@settings(FUZZ, max_examples=60)
@given(text=configs())
def test_generated_configs(capsys, text):
    with tempfile.TemporaryDirectory(prefix="kgfact-fuzz-") as tmp:
        config = Path(tmp) / "study.toml"
        config.write_bytes(text)
        code, err = run_cli(capsys, ["run", str(config), "--run", str(Path(tmp) / "run"),
                                     "--quiet"])
    assert_one_error(code, err)  # the dead endpoint fails every config that is valid


@settings(FUZZ, max_examples=300)
@given(template=TEMPLATES, question=st.text(), answer=st.text())
def test_generated_templates_are_refused_or_format_every_question(template, question, answer):
    """A template SliCK's config accepts formats any question and answer (a refused one was
    once accepted and failed mid-run); a refusal is one line."""
    for key, values in (("exemplar_template", {"question": question, "answer": answer}),
                        ("query_template", {"question": question})):
        try:
            config = SlickConfig(**{key: template})
        except KgfactError as exc:
            assert "\n" not in str(exc)
            continue
        getattr(config, key).format(**values)  # raised KeyError, IndexError or ValueError


def test_every_config_field_is_a_flag_of_its_command():
    """Flags come from the config dataclasses: every field (nested ones by their path) is
    reachable, with its default left to the dataclass."""
    from dataclasses import fields, is_dataclass
    from typing import get_args, get_type_hints

    from kgfact.cli import parser
    from kgfact.config import SEP
    from kgfact.models import ModelConfig
    from kgfact.sampling import BackendConfig
    from kgfact.stages import STAGES

    def paths(cls, prefix=""):
        for f in fields(cls):
            tp = get_type_hints(cls)[f.name]
            inner = [a for a in get_args(tp) if a is not type(None)] or [tp]
            if is_dataclass(inner[0]):
                yield from paths(inner[0], f"{prefix}{f.name}.")
            else:
                yield prefix + f.name

    commands = {a.dest: a for a in parser()._subparsers._group_actions}["command"].choices
    for name in STAGES:
        stage = STAGES.get(name)
        dests = {a.dest for a in commands[name]._actions}
        want = {f"{name}{SEP}{p}" for p in paths(stage.config_class())} if stage.config else set()
        if stage.uses_model:
            want |= {f"model{SEP}{p}" for p in paths(ModelConfig)}
        if stage.uses_backend:
            want |= {f"backend{SEP}{p}" for p in paths(BackendConfig)}
        assert want <= dests, (name, sorted(want - dests))
        assert all(a.default == "==SUPPRESS==" for a in commands[name]._actions
                   if SEP in a.dest), name


@pytest.mark.parametrize("argv, expected", [
    # fields no hand-written flag reached before the flags were generated from the configs
    (["evaluate", "RUN", "--bootstrap", "0"], "bootstrap must be >= 1, got 0"),
    (["evaluate", "RUN", "--checkpoints", "final"], "unknown checkpoint(s) final"),
    (["build", "--endpoint", DEAD_ENDPOINT, "--expand-hops", "-1"], "expand_hops must be >= 0"),
    (["slick", "RUN", "--sampling-top-k", "0"], "top_k must be >= 1"),
    (["finetune", "RUN", "--lora-dropout", "1"], "dropout must be < 1"),
])
def test_generated_flags_are_checked_like_config_keys(capsys, fake_run, argv, expected):
    argv = [str(fake_run) if a == "RUN" else a for a in argv]
    assert_one_error(*run_cli(capsys, argv), expected)
