from pathlib import Path


def test_total_file_exists():
    assert Path("/app/total.txt").is_file()


def test_total_value():
    assert Path("/app/total.txt").read_text().strip() == "60.99"


def test_input_untouched():
    assert Path("/app/sales.csv").read_text().count("\n") == 5
