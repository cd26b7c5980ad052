from pathlib import Path

import pytest

from app.settings import MIB, Settings, SettingsError


def test_defaults_are_the_safe_embedded_ones():
    s = Settings.from_env({})
    assert s.storage_backend == "local"
    assert s.port == 4321
    assert s.public_base_url == "http://localhost:4321"
    assert s.data_dir == Path("data")
    assert s.allow_private_source_urls is False
    assert s.max_source_bytes == 20 * MIB
    assert s.max_image_pixels == 40_000_000
    assert s.max_redirects == 3
    assert s.total_timeout_s <= 10
    assert s.sentry_dsn is None


def test_bucket_switches_to_gcs_and_values_are_parsed():
    s = Settings.from_env(
        {
            "PDF_BUCKET": "my-pdfs",
            "PROJECT_ID": "proj",
            "PORT": "8080",
            "MAX_SOURCE_BYTES": "1048576",
            "ALLOW_PRIVATE_SOURCE_URLS": "true",
            "URL_MODE": "SIGNED",
            "RELEASE": "abc123",
            "PUBLIC_BASE_URL": "https://x.example/",
        }
    )
    assert s.storage_backend == "gcs"
    assert (s.pdf_bucket, s.project_id, s.port) == ("my-pdfs", "proj", 8080)
    assert s.max_source_bytes == 1048576
    assert s.allow_private_source_urls is True
    assert s.url_mode == "signed"
    assert s.release == "abc123"
    assert s.public_base_url == "https://x.example"


@pytest.mark.parametrize(
    "env",
    [
        {"PORT": "eighty"},
        {"PORT": "0"},
        {"MAX_SOURCE_BYTES": "-5"},
        {"ALLOW_PRIVATE_SOURCE_URLS": "maybe"},
        {"URL_MODE": "presigned"},
        {"WORKER_MEMORY_BUDGET": "1000"},
        {"SOURCE_TOTAL_TIMEOUT": "soon"},
    ],
)
def test_bad_values_stop_the_process_with_the_setting_name(env):
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert next(iter(env)) in str(err.value)
