"""Short secrets (1-2 characters) are masked where they stand alone, without mangling words."""

from guestprep import secrets


def test_two_character_password_is_masked_as_a_token():
    secrets.register("q7")
    text = secrets.redact("login failed for admin with password q7 (q7x and aq7 untouched)")
    assert "password ********" in text
    assert "q7x" in text and "aq7" in text


def test_one_character_secret_masked_in_key_value_and_quotes():
    secrets.register("Z")
    assert secrets.redact("password=Z") == "password=********"
    assert secrets.redact("'Z'") == "'********'"
    assert secrets.redact("Zebra") == "Zebra"


def test_long_secrets_still_masked_inside_words():
    secrets.register("S3cr3t-long")
    assert secrets.redact("xS3cr3t-longy") == "x********y"
