"""Readers on good and broken files: values read, and errors naming file, line and columns."""

import gzip
import json

import pytest
import torch

from seqlab.data import (
    DataError,
    iter_labelled,
    open_text,
    read_conll,
    read_labelled,
    read_parallel,
    read_series,
    read_text,
)


def write(path, text, compress=False):
    if compress:
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_open_text_reads_gzip_and_reports_missing(tmp_path):
    write(tmp_path / "a.txt.gz", "héllo\n", compress=True)
    with open_text(tmp_path / "a.txt.gz") as handle:
        assert handle.read() == "héllo\n"
    with pytest.raises(DataError, match=r"nope\.txt does not exist"):
        open_text(tmp_path / "nope.txt")


def test_read_text_plain_gzip_empty_and_not_utf8(tmp_path):
    assert read_text(write(tmp_path / "t.txt", "to be\nor not\n")) == "to be\nor not\n"
    assert read_text(write(tmp_path / "t.txt.gz", "abc", compress=True)) == "abc"
    with pytest.raises(DataError, match=r"e\.txt is empty"):
        read_text(write(tmp_path / "e.txt", ""))
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_text(tmp_path / "latin.txt")


@pytest.mark.parametrize("name", ["d.csv", "d.csv.gz", "d.tsv", "d.tsv.gz", "d.jsonl", "d.json.gz"])
def test_read_labelled_every_format(tmp_path, name):
    rows = [("great film, loved it", "pos"), ('said "meh"', "neg"), ("fine", "1")]
    if ".csv" in name:
        text = 'id,text,label\n1,"great film, loved it",pos\n2,"said ""meh""",neg\n\n3,fine,1\n'
    elif ".tsv" in name:
        text = "".join(f"{t}\t{label}\n" for t, label in rows)
        text = "text\tlabel\n" + text
    else:
        text = "".join(
            json.dumps({"text": t, "label": int(l) if l == "1" else l}) + "\n" for t, l in rows
        )
    path = write(tmp_path / name, text, compress=name.endswith(".gz"))
    assert read_labelled(path) == rows
    assert list(iter_labelled(path)) == rows


def test_read_labelled_custom_column_names(tmp_path):
    path = write(tmp_path / "r.csv", "review,stars\nnice,5\nbad,1\n")
    assert read_labelled(path, text_column="review", label_column="stars") == [
        ("nice", "5"),
        ("bad", "1"),
    ]


def test_read_labelled_missing_column_lists_available(tmp_path):
    path = write(tmp_path / "r.csv", "review,stars\nnice,5\n")
    with pytest.raises(DataError, match=r"r\.csv, line 1: no column 'text'.*\['review', 'stars'\]"):
        read_labelled(path)
    path = write(tmp_path / "r.jsonl", '{"review": "nice", "label": "pos"}\n')
    with pytest.raises(
        DataError, match=r"r\.jsonl, line 1: no text key 'text'.*\['label', 'review'\]"
    ):
        read_labelled(path)


def test_read_labelled_broken_lines_name_the_line(tmp_path):
    path = write(tmp_path / "b.jsonl", '{"text": "a", "label": "x"}\n\n{"text": "b", "label"\n')
    with pytest.raises(DataError, match=r"b\.jsonl, line 3: malformed JSON"):
        read_labelled(path)
    path = write(tmp_path / "b.csv", "text,label\nok,x\ntoo,many,fields\n")
    with pytest.raises(DataError, match=r"b\.csv, line 3: 3 fields, but the header has 2"):
        read_labelled(path)
    path = write(tmp_path / "b.tsv", "text\tlabel\nok\tx\n \ty\n")
    with pytest.raises(DataError, match=r"b\.tsv, line 3: empty text"):
        read_labelled(path)
    path = write(tmp_path / "l.jsonl", "[1, 2]\n")
    with pytest.raises(DataError, match=r"l\.jsonl, line 1: expected a JSON object"):
        read_labelled(path)


def test_read_labelled_empty_and_unknown_extension(tmp_path):
    with pytest.raises(DataError, match=r"e\.csv is empty"):
        read_labelled(write(tmp_path / "e.csv", ""))
    with pytest.raises(DataError, match=r"h\.csv has no examples"):
        read_labelled(write(tmp_path / "h.csv", "text,label\n"))
    with pytest.raises(DataError, match=r"'\.xlsx'; supported: \.csv, \.tsv, \.jsonl, \.json"):
        read_labelled(write(tmp_path / "d.xlsx", "x"))
    with pytest.raises(DataError, match="does not exist"):
        read_labelled(tmp_path / "missing.csv")


def test_iter_labelled_is_lazy(tmp_path):
    path = write(tmp_path / "s.jsonl", '{"text": "a", "label": "x"}\nnot json\n')
    rows = iter_labelled(path)
    assert next(rows) == ("a", "x")
    with pytest.raises(DataError, match="line 2"):
        next(rows)


CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
"""


@pytest.mark.parametrize("compress", [False, True])
def test_read_conll_sentences_and_columns(tmp_path, compress):
    path = write(tmp_path / ("c.conll.gz" if compress else "c.conll"), CONLL, compress)
    assert read_conll(path) == [
        (["EU", "rejects", "German"], ["B-ORG", "O", "B-MISC"]),
        (["Peter", "Blackburn"], ["B-PER", "I-PER"]),
    ]
    assert read_conll(path, tag_column=1)[1] == (["Peter", "Blackburn"], ["NNP", "NNP"])


def test_read_conll_too_few_columns_names_the_line(tmp_path):
    path = write(tmp_path / "c.txt", "a\tX\nb\n")
    with pytest.raises(DataError, match=r"c\.txt, line 2: 1 column\(s\).*need at least 2"):
        read_conll(path)
    path = write(tmp_path / "c3.txt", "a X O\nb Y\n")
    with pytest.raises(DataError, match="line 2: 2 column"):
        read_conll(path, tag_column=2)
    with pytest.raises(DataError, match="no sentences"):
        read_conll(write(tmp_path / "e.txt", "\n\n"))


def test_read_conll_comments(tmp_path):
    path = write(tmp_path / "u.conllu", "# sent_id = 1\n1 Hi\n2 there\n")
    assert read_conll(path, token_column=1, tag_column=0, comment_prefix="#") == [
        (["Hi", "there"], ["1", "2"])
    ]


def test_read_series_numeric_columns_and_selection(tmp_path):
    text = "date,temp,rain\n2020-01-01,1.5,0\n2020-01-02,-2,0.25\n2020-01-03,3e1,1\n"
    path = write(tmp_path / "s.csv.gz", text, compress=True)
    values, names = read_series(path)
    assert names == ["temp", "rain"]
    assert values.dtype == torch.float32
    assert torch.equal(values, torch.tensor([[1.5, 0.0], [-2.0, 0.25], [30.0, 1.0]]))
    values, names = read_series(path, columns=["rain"])
    assert names == ["rain"] and values.shape == (3, 1)


def test_read_series_errors(tmp_path):
    path = write(tmp_path / "s.csv", "t,x\n1,2\n2,oops\n")
    with pytest.raises(DataError, match=r"s\.csv, line 3, column 'x': 'oops' is not a number"):
        read_series(path)
    with pytest.raises(DataError, match=r"no column 'y'.*\['t', 'x'\]"):
        read_series(path, columns=["y"])
    with pytest.raises(DataError, match="no rows"):
        read_series(write(tmp_path / "h.csv", "t,x\n"))


@pytest.mark.parametrize("compress", [False, True])
def test_read_parallel_tsv_jsonl_and_two_files(tmp_path, compress):
    pairs = [("ein Hund", "a dog"), ("zwei Katzen", "two cats")]
    gz = ".gz" if compress else ""
    tsv = write(tmp_path / f"p.tsv{gz}", "ein Hund\ta dog\nzwei Katzen\ttwo cats\n", compress)
    assert read_parallel(tsv) == pairs
    lines = "".join(json.dumps({"de": s, "en": t}) + "\n" for s, t in pairs)
    jsonl = write(tmp_path / f"p.jsonl{gz}", lines, compress)
    assert read_parallel(jsonl, source_key="de", target_key="en") == pairs
    de = write(tmp_path / f"train.de{gz}", "ein Hund\nzwei Katzen\n", compress)
    en = write(tmp_path / f"train.en{gz}", "a dog \r\ntwo cats\n", compress)
    assert read_parallel(de, en) == pairs


def test_read_parallel_errors(tmp_path):
    de = write(tmp_path / "x.de", "a\nb\nc\n")
    en = write(tmp_path / "x.en", "a\nb\n")
    with pytest.raises(DataError, match=r"x\.de has 3 lines but .*x\.en has 2"):
        read_parallel(de, en)
    en = write(tmp_path / "y.en", "a\n\nc\n")
    with pytest.raises(DataError, match=r"y\.en, line 2: empty or missing target"):
        read_parallel(de, en)
    tsv = write(tmp_path / "p.tsv", "a\tb\nonly source\n")
    with pytest.raises(DataError, match=r"p\.tsv, line 2: 1 tab-separated fields, expected 2"):
        read_parallel(tsv)
    tsv = write(tmp_path / "q.tsv", "a\tb\n\tb\n")
    with pytest.raises(DataError, match=r"q\.tsv, line 2: empty or missing source"):
        read_parallel(tsv)
    with pytest.raises(DataError, match=r"unknown parallel file type '\.txt'"):
        read_parallel(write(tmp_path / "p.txt", "a\n"))
    jsonl = write(tmp_path / "p.jsonl", '{"source": "a"}\n')
    with pytest.raises(DataError, match=r"line 1: no target key 'target'; keys on this line"):
        read_parallel(jsonl)


def test_byte_order_mark_is_dropped(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("text,label\nnice,pos\n".encode("utf-8-sig"))
    assert read_labelled(path) == [("nice", "pos")]
