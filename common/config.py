"""Settings from a YAML file and the environment (environment wins).

Every key can be set by env as GIFTCARD_<SECTION>__<KEY>, e.g. GIFTCARD_REDIS__URL. The config file
path comes from `--config` or GIFTCARD_CONFIG. Merchants may also come from a separate YAML file
(GIFTCARD_MERCHANTS_FILE, e.g. a mounted Kubernetes secret) so that API key hashes and vendor
credentials stay out of the main config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ServiceName = Literal["balance", "authorization", "fulfillment", "settlement", "refund", "gateway"]
SERVICE_NAMES: tuple[str, ...] = ("gateway", "balance", "authorization", "fulfillment", "settlement", "refund")

# Only for dev mode: a fixed key makes demo card ids stable across restarts. Any other deployment
# must set security.card_hash_key.
DEV_CARD_HASH_KEY = "dev-only-card-hash-key-do-not-use-in-production"


class _Section(BaseModel):
    # A misspelled key must fail at start-up, not silently fall back to a default.
    model_config = ConfigDict(extra="forbid")


class GrpcSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)
    max_message_bytes: int = Field(1024 * 1024, ge=1024)
    shutdown_grace_seconds: float = Field(20.0, ge=0)
    keepalive_time_ms: int = 30_000
    keepalive_timeout_ms: int = 10_000
    # Default deadline applied when a caller sends none, so no request can hang forever.
    default_deadline_seconds: float = Field(10.0, gt=0)
    # Off (None): plaintext, merchants authenticate by API key only. On: TLS, optionally mTLS.
    tls: "GrpcTlsSettings | None" = None


class GrpcTlsSettings(_Section):
    """Server TLS (PEM file paths). With `client_ca_file` + `require_client_cert` callers must
    present a certificate signed by that CA (mTLS); the API key is still required on top."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    require_client_cert: bool = False
    # Microservices mode: the CA that signed the other services' server certificates (default
    # client_ca_file). The service presents its own cert_file/key_file as its client certificate.
    peer_ca_file: str | None = None

    @model_validator(mode="after")
    def _ca_for_mtls(self) -> "GrpcTlsSettings":
        if self.require_client_cert and not self.client_ca_file:
            raise ValueError("grpc.tls.require_client_cert needs grpc.tls.client_ca_file")
        return self


class RedisSettings(_Section):
    url: str = "redis://127.0.0.1:6379/0"
    password: SecretStr | None = None
    tls: bool = False
    cluster: bool = False
    max_connections: int = Field(128, ge=1)
    socket_timeout_seconds: float = 5.0


class TelemetrySettings(_Section):
    service_name: str = "giftcard"
    log_level: str = "INFO"
    # Fraction of new traces sampled (parent decisions are always honoured).
    trace_sample_ratio: float = Field(0.0, ge=0.0, le=1.0)
    otlp_endpoint: str | None = None
    console_exporter: bool = False
    # One JSON line per RPC on logger giftcard.access (INFO); off also when log_level is above INFO.
    access_log: bool = True


class MetricsSettings(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)
    # Gauges read from Redis at scrape time (open holds, job backlogs) are cached this long.
    scrape_cache_seconds: float = Field(5.0, ge=0)


class SecuritySettings(_Section):
    card_hash_key: SecretStr | None = None
    # Dev mode: the demo merchant and its well-known key are accepted. Never in production.
    dev_mode: bool = False
    # How long an answer of the Redis API key store is cached per process: a revoked key stops
    # working within this time (`giftcard key revoke`).
    api_key_cache_seconds: float = Field(5.0, ge=0)
    # Shared secret of the mesh's own processes: background jobs (scheduler, resolver) that act for
    # a merchant with no caller present it over gRPC, with the merchant in `x-giftcard-merchant`.
    # Needed in microservices mode; unused all-in-one. From a secret, never the config file.
    internal_token: SecretStr | None = None


class LimitsSettings(_Section):
    """Abuse limits (common/limits.py), enforced with one Redis token-bucket script. 0 = off (the
    default), so only deployments that size them pay the extra Redis call."""

    # Calls per second per merchant and service API (interceptor); burst = bucket size (0 = rps).
    merchant_rps: float = Field(0.0, ge=0)
    merchant_burst: int = Field(0, ge=0)
    # Customer operations per card per minute (balance, hold, redeem, activate, reload, cash-out);
    # captures, releases, reversals and refund credits are never limited (they finish or undo
    # operations already admitted).
    card_ops_per_minute: int = Field(0, ge=0)
    # Card lookups per merchant per minute that may answer CARD_NOT_FOUND; once spent, every card
    # lookup of the merchant answers RESOURCE_EXHAUSTED, so card numbers cannot be enumerated.
    unknown_card_lookups_per_minute: int = Field(0, ge=0)


class IdempotencySettings(_Section):
    ttl_seconds: int = Field(24 * 3600, ge=60)
    lease_seconds: int = Field(30, ge=1)


class SettlementSettings(_Section):
    """The settlement service's scheduler (services/settlement/README.md)."""

    # Off: no jobs run in this process (RunSettlementBatch still works); tests drive jobs directly.
    scheduler_enabled: bool = True
    # How often the scheduler wakes; each job runs when its own interval has passed.
    tick_seconds: float = Field(1.0, gt=0)
    batch_interval_seconds: float = Field(60.0, gt=0)
    reversal_interval_seconds: float = Field(30.0, gt=0)
    expiry_sweep_interval_seconds: float = Field(300.0, gt=0)
    resolver_interval_seconds: float = Field(60.0, gt=0)
    # Queued captures per batch run, and provider calls in flight at once.
    batch_size: int = Field(500, ge=1, le=10_000)
    concurrency: int = Field(8, ge=1, le=256)
    # A claimed item (or a job's turn for a merchant) is another worker's after this long.
    lease_seconds: float = Field(30.0, gt=0)
    # Intents, checkouts and submitted items untouched this long belong to a dead worker.
    resolver_grace_seconds: float = Field(60.0, ge=0)
    # Holds checked per merchant per expiry sweep.
    expiry_sweep_limit: int = Field(1000, ge=1)
    # Finished captures and reversals stay listed in Redis this long, then the batch job drops them.
    retention_seconds: int = Field(7 * 24 * 3600, ge=60)
    # Merchant API keys the scheduler presents to the gateway when it runs over gRPC (separate
    # mode): jobs act for a merchant but have no caller. Unused all-in-one. From a secret.
    job_api_keys: dict[str, SecretStr] = Field(default_factory=dict)


class ProviderProfile(_Section):
    """One provider a merchant accepts cards from, chosen by card number prefix."""

    provider: Literal["native", "paytronix", "ackroo", "radial", "clutch", "smartclixx"] = "native"
    # Card number prefixes (BIN ranges) routed to this profile; empty = every card.
    card_prefixes: list[str] = Field(default_factory=list)
    base_url: str | None = None
    # Names of credential files / env values for the vendor; values never logged.
    credentials: dict[str, SecretStr] = Field(default_factory=dict)
    timeout_seconds: float = 5.0
    # How holds are emulated for vendors without them.
    hold_emulation: Literal["shadow", "redeem_at_authorize"] = "shadow"
    options: dict[str, Any] = Field(default_factory=dict)


class MerchantSettings(_Section):
    # SHA-256 hex digests of the merchant's API keys (several during rotation).
    api_key_sha256: list[str] = Field(default_factory=list)
    currencies: list[str] = Field(default_factory=lambda: ["USD"])
    redemption_mode: Literal["STRICT", "PARTIAL"] = "STRICT"
    hold_ttl_seconds: int = Field(7 * 24 * 3600, ge=60)
    max_hold_ttl_seconds: int = Field(30 * 24 * 3600, ge=60)
    refund_split: Literal["LAST_PAID_FIRST", "FIRST_PAID_FIRST", "PRO_RATA"] = "LAST_PAID_FIRST"
    refund_to_card_policy: Literal["NEW_CARD", "FUND_EXISTING"] = "NEW_CARD"
    max_reload_minor: int = Field(500_00, ge=1)
    max_card_balance_minor: int = Field(2_000_00, ge=1)
    providers: list[ProviderProfile] = Field(default_factory=lambda: [ProviderProfile()])

    @field_validator("api_key_sha256")
    @classmethod
    def _hex_digests(cls, values: list[str]) -> list[str]:
        for value in values:
            if len(value) != 64 or any(c not in "0123456789abcdef" for c in value.lower()):
                raise ValueError("api_key_sha256 entries must be SHA-256 hex digests, not keys")
        return [v.lower() for v in values]


class DemoCard(_Section):
    card_number: str
    pin: str | None = None
    balance_minor: int = 0
    currency: str = "USD"
    active: bool = True


class DemoSettings(_Section):
    """Cards created at start-up for the dev merchant (dev mode only)."""

    merchant_id: str = "demo"
    cards: list[DemoCard] = Field(default_factory=list)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GIFTCARD_", env_nested_delimiter="__", extra="forbid"
    )

    grpc: GrpcSettings = Field(default_factory=GrpcSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    idempotency: IdempotencySettings = Field(default_factory=IdempotencySettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    settlement: SettlementSettings = Field(default_factory=SettlementSettings)
    # host:port of each service in microservices mode; absent = served in this process.
    endpoints: dict[str, str] = Field(default_factory=dict)
    merchants: dict[str, MerchantSettings] = Field(default_factory=dict)
    demo: DemoSettings = Field(default_factory=DemoSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's content arrives as init kwargs; the environment overrides it.
        return env_settings, init_settings, file_secret_settings

    @model_validator(mode="after")
    def _production_needs_secrets(self) -> "Settings":
        if self.security.card_hash_key is None:
            if not self.security.dev_mode:
                raise ValueError("security.card_hash_key is required outside dev mode")
            self.security.card_hash_key = SecretStr(DEV_CARD_HASH_KEY)
        return self

    @property
    def card_hash_key(self) -> bytes:
        assert self.security.card_hash_key is not None
        return self.security.card_hash_key.get_secret_value().encode()


def _read_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data


def load_settings(config_path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Settings from the config file (argument or GIFTCARD_CONFIG), merchants file, env, overrides."""
    path = config_path or os.environ.get("GIFTCARD_CONFIG")
    data: dict[str, Any] = _read_yaml(Path(path)) if path else {}
    merchants_file = os.environ.get("GIFTCARD_MERCHANTS_FILE")
    if merchants_file:
        data.setdefault("merchants", {}).update(_read_yaml(Path(merchants_file)).get("merchants", {}))
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return Settings(**data)
