use std::time::Duration;

use super::*;

fn env(vars: &[(&str, &str)]) -> Environment {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A config file with `text` in a temp folder (kept alive by the returned guard).
fn file(text: &str) -> (tempfile::TempDir, ConfigFile) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cellar.toml");
    std::fs::write(&path, text).unwrap();
    (dir, ConfigFile::Named(path))
}

fn flag(key: &'static str, flag: &'static str, value: &str) -> Flag {
    Flag {
        key,
        flag,
        value: value.to_owned(),
    }
}

fn load_err(file: &ConfigFile, env: &Environment, flags: &[Flag]) -> String {
    Settings::load(file, env, flags)
        .expect_err("should be refused")
        .to_string()
}

#[test]
fn no_file_at_all_gives_the_embedded_default() {
    let settings = Settings::load(&ConfigFile::Default, &env(&[]), &[]).unwrap();
    assert_eq!(settings.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(settings.data_dir, Path::new("./cellar-data/local"));
    assert_eq!(
        settings.store_url,
        StoreUrl::Folder("./cellar-data/bucket".into())
    );
    assert_eq!(settings.engine_config().prefix, "cellar-users");
    assert_eq!(settings.conflict, ConflictPolicy::LastWriteWins);
    assert_eq!(
        settings.size_thresholds,
        SizeThresholds {
            info_bytes: 524_288,
            warn_bytes: 1_048_576
        }
    );
    assert_eq!(settings.engine_config().min_upload_interval, Duration::ZERO);
    assert!(settings.engine_config().version_check);
    let options = settings.server_options().unwrap();
    assert!(matches!(
        options.auth,
        AuthMode::Header {
            trusted_proxy: false
        }
    ));
    assert_eq!(settings.source_of("store.url"), Source::Default);
}

#[test]
fn env_overrides_the_file_and_flags_override_env() {
    let (dir, config) = file(
        "data_dir = \"/from/file\"\n\
         [store]\nurl = \"file:///file-bucket\"\n\
         [sync]\nconflict = \"strict\"\nsize_info_bytes = 10\n",
    );
    let vars = env(&[
        ("CELLAR_STORE_URL", "file:///env-bucket"),
        ("CELLAR_SYNC_CONFLICT", "rebase"),
    ]);
    let flags = [flag("store.url", "--store-url", "s3://flag-bucket/tenants")];
    let settings = Settings::load(&config, &vars, &flags).unwrap();

    assert_eq!(settings.data_dir, Path::new("/from/file"));
    assert_eq!(settings.size_thresholds.info_bytes, 10);
    assert_eq!(settings.conflict, ConflictPolicy::Rebase);
    assert_eq!(
        settings.store_url,
        StoreUrl::S3 {
            bucket: "flag-bucket".into(),
            prefix: "tenants".into()
        }
    );
    assert_eq!(
        settings.source_of("data_dir"),
        Source::File(dir.path().join("cellar.toml"))
    );
    assert_eq!(
        settings.source_of("sync.conflict"),
        Source::Env("CELLAR_SYNC_CONFLICT".into())
    );
    assert_eq!(settings.source_of("store.url"), Source::Flag("--store-url"));
}

#[test]
fn an_unknown_key_in_the_file_is_named_with_the_file_and_the_keys_of_its_section() {
    let (_dir, config) = file("[store]\nbukcet = \"x\"\n");
    let err = load_err(&config, &env(&[]), &[]);
    assert!(err.contains("unknown key store.bukcet"), "{err}");
    assert!(
        err.contains("config file") && err.contains("cellar.toml"),
        "{err}"
    );
    assert!(
        err.contains("store.url") && !err.contains("sync.conflict"),
        "{err}"
    );
}

#[test]
fn an_invalid_value_names_the_key_and_the_environment_variable() {
    let err = load_err(
        &ConfigFile::Default,
        &env(&[("CELLAR_SYNC_CONFLICT", "sometimes")]),
        &[],
    );
    assert!(err.contains("invalid value for sync.conflict"), "{err}");
    assert!(
        err.contains("environment variable CELLAR_SYNC_CONFLICT"),
        "{err}"
    );
    assert!(err.contains("last-write-wins, strict or rebase"), "{err}");
}

#[test]
fn an_invalid_flag_value_names_the_flag() {
    let err = load_err(
        &ConfigFile::Default,
        &env(&[]),
        &[flag("server.listen", "--listen", "localhost")],
    );
    assert!(
        err.contains("server.listen") && err.contains("flag --listen"),
        "{err}"
    );
    assert!(err.contains("IP:PORT"), "{err}");
}

#[test]
fn a_value_of_the_wrong_toml_type_is_refused() {
    let (_dir, config) = file("[sync]\nsize_info_bytes = \"big\"\n");
    let err = load_err(&config, &env(&[]), &[]);
    assert!(
        err.contains("sync.size_info_bytes") && err.contains("expected an integer, found string"),
        "{err}"
    );
    let (_dir, config) = file("[store]\nallow_http = 1\n");
    let err = load_err(&config, &env(&[]), &[]);
    assert!(
        err.contains("store.allow_http") && err.contains("true or false"),
        "{err}"
    );
}

#[test]
fn malformed_toml_names_the_file() {
    let (_dir, config) = file("[store\nurl = 1");
    let err = load_err(&config, &env(&[]), &[]);
    assert!(err.contains("cellar.toml is not valid TOML"), "{err}");
}

#[test]
fn a_named_config_file_must_exist() {
    let err = load_err(
        &ConfigFile::Named("/nonexistent/cellar.toml".into()),
        &env(&[]),
        &[],
    );
    assert!(
        err.contains("cannot read config file /nonexistent/cellar.toml"),
        "{err}"
    );
}

#[test]
fn a_typo_in_a_section_variable_is_refused_and_foreign_variables_are_left_alone() {
    let err = load_err(
        &ConfigFile::Default,
        &env(&[("CELLAR_STORE_URLL", "memory://")]),
        &[],
    );
    assert!(
        err.contains("unknown key store.urll") && err.contains("CELLAR_STORE_URLL"),
        "{err}"
    );
    let foreign = env(&[
        ("CELLAR_VENV", "/venv"),
        ("CELLAR_CONFIG", "x.toml"),
        ("CELLAR_DATA_DIR", "/d"),
    ]);
    let settings = Settings::load(&ConfigFile::Default, &foreign, &[]).unwrap();
    assert_eq!(settings.data_dir, Path::new("/d"));
}

#[test]
fn an_empty_variable_counts_as_unset() {
    let settings =
        Settings::load(&ConfigFile::Default, &env(&[("CELLAR_STORE_URL", "")]), &[]).unwrap();
    assert_eq!(settings.source_of("store.url"), Source::Default);
}

#[test]
fn credentials_in_the_file_are_refused_with_a_pointer_to_the_environment() {
    let (_dir, config) = file("[store]\nurl = \"s3://b\"\naccess_key_id = \"AKIA\"\n");
    let err = load_err(&config, &env(&[]), &[]);
    assert!(
        err.contains("store.access_key_id") && err.contains("AWS_ACCESS_KEY_ID"),
        "{err}"
    );
}

#[test]
fn s3_settings_on_a_folder_store_are_refused() {
    let err = load_err(
        &ConfigFile::Default,
        &env(&[("CELLAR_STORE_ENDPOINT", "http://127.0.0.1:9000")]),
        &[],
    );
    assert!(
        err.contains("store.endpoint") && err.contains("CELLAR_STORE_ENDPOINT"),
        "{err}"
    );
    assert!(
        err.contains("file://./cellar-data/bucket (from the default)"),
        "{err}"
    );
}

#[test]
fn an_s3_url_builds_a_store_with_its_endpoint_and_prefix() {
    let (_dir, config) = file(
        "[store]\nurl = \"s3://my-bucket/cellar-users\"\n\
         endpoint = \"http://127.0.0.1:9\"\nregion = \"auto\"\nallow_http = true\n",
    );
    let settings = Settings::load(&config, &env(&[]), &[]).unwrap();
    assert_eq!(settings.engine_config().prefix, "cellar-users");
    assert!(settings.open_store().is_ok());
}

#[test]
fn size_thresholds_must_be_in_order() {
    let vars = env(&[
        ("CELLAR_SYNC_SIZE_INFO_BYTES", "2000"),
        ("CELLAR_SYNC_SIZE_WARN_BYTES", "1000"),
    ]);
    let err = load_err(&ConfigFile::Default, &vars, &[]);
    assert!(
        err.contains("sync.size_info_bytes") && err.contains("sync.size_warn_bytes (1000)"),
        "{err}"
    );
}

#[test]
fn limits_are_read_and_must_be_positive() {
    let (_dir, config) = file("[limits]\nquery_timeout_ms = 1500\nmax_statements = 7\n");
    let settings = Settings::load(&config, &env(&[]), &[]).unwrap();
    let limits = settings.server_options().unwrap().limits;
    assert_eq!(
        (limits.query_timeout, limits.max_statements),
        (Duration::from_millis(1500), 7)
    );
    let err = load_err(
        &ConfigFile::Default,
        &env(&[("CELLAR_LIMITS_MAX_RESULT_ROWS", "0")]),
        &[],
    );
    assert!(
        err.contains("limits.max_result_rows") && err.contains("at least 1"),
        "{err}"
    );
}

#[test]
fn pacing_and_the_version_check_reach_the_engine() {
    let (_dir, config) = file("[sync]\nmin_upload_interval_ms = 1000\nversion_check = false\n");
    let engine = Settings::load(&config, &env(&[]), &[])
        .unwrap()
        .engine_config();
    assert_eq!(
        (engine.min_upload_interval, engine.version_check),
        (Duration::from_secs(1), false)
    );
    let vars = env(&[
        ("CELLAR_SYNC_MIN_UPLOAD_INTERVAL_MS", "250"),
        ("CELLAR_SYNC_VERSION_CHECK", "true"),
    ]);
    let engine = Settings::load(&config, &vars, &[]).unwrap().engine_config();
    assert_eq!(
        (engine.min_upload_interval, engine.version_check),
        (Duration::from_millis(250), true)
    );
}

#[test]
fn pacing_and_the_version_check_refuse_malformed_values() {
    let err = load_err(
        &ConfigFile::Default,
        &env(&[("CELLAR_SYNC_MIN_UPLOAD_INTERVAL_MS", "1s")]),
        &[],
    );
    assert!(
        err.contains("sync.min_upload_interval_ms") && err.contains("milliseconds"),
        "{err}"
    );
    let err = load_err(
        &ConfigFile::Default,
        &env(&[("CELLAR_SYNC_VERSION_CHECK", "off")]),
        &[],
    );
    assert!(
        err.contains("sync.version_check") && err.contains("true or false"),
        "{err}"
    );
}

#[test]
fn fault_injection_is_off_unless_a_rate_or_a_latency_is_set() {
    let settings = Settings::load(&ConfigFile::Default, &env(&[]), &[]).unwrap();
    assert_eq!(settings.faults.injected(), None);
    let zero = env(&[
        ("CELLAR_FAULTS_ERROR_RATE", "0"),
        ("CELLAR_FAULTS_SEED", "9"),
    ]);
    assert_eq!(
        Settings::load(&ConfigFile::Default, &zero, &[])
            .unwrap()
            .faults
            .injected(),
        None
    );
    let latency = env(&[("CELLAR_FAULTS_LATENCY_MS", "20")]);
    let rates = Settings::load(&ConfigFile::Default, &latency, &[])
        .unwrap()
        .faults
        .injected();
    assert_eq!(
        rates.map(|rates| rates.max_latency),
        Some(Duration::from_millis(20))
    );
}

#[test]
fn fault_keys_are_read_from_the_file_and_overridden_by_env() {
    let (_dir, config) =
        file("[faults]\nerror_rate = 0.1\ndrop_rate = 0\nlatency_ms = 5\nseed = 42\n");
    let faults = Settings::load(&config, &env(&[]), &[]).unwrap().faults;
    let rates = faults.injected().expect("faults are on");
    assert_eq!(
        (rates.error_rate, rates.drop_rate, rates.max_latency),
        (0.1, 0.0, Duration::from_millis(5))
    );
    assert_eq!(faults.seed, 42);

    let vars = env(&[
        ("CELLAR_FAULTS_DROP_RATE", "0.25"),
        ("CELLAR_FAULTS_SEED", "7"),
    ]);
    let settings = Settings::load(&config, &vars, &[]).unwrap();
    assert_eq!(
        (
            settings.faults.rates.error_rate,
            settings.faults.rates.drop_rate
        ),
        (0.1, 0.25)
    );
    assert_eq!(settings.faults.seed, 7);
    assert_eq!(
        settings.source_of("faults.drop_rate"),
        Source::Env("CELLAR_FAULTS_DROP_RATE".into())
    );
}

#[test]
fn fault_rates_must_be_probabilities_that_fit_together() {
    for bad in ["1.5", "-0.1", "lots", "NaN"] {
        let err = load_err(
            &ConfigFile::Default,
            &env(&[("CELLAR_FAULTS_ERROR_RATE", bad)]),
            &[],
        );
        assert!(
            err.contains("faults.error_rate") && err.contains("from 0 to 1"),
            "{bad}: {err}"
        );
    }
    let both = env(&[
        ("CELLAR_FAULTS_ERROR_RATE", "0.6"),
        ("CELLAR_FAULTS_DROP_RATE", "0.6"),
    ]);
    let err = load_err(&ConfigFile::Default, &both, &[]);
    assert!(
        err.contains("faults.drop_rate") && err.contains("add up to more than 1"),
        "{err}"
    );
    let (_dir, config) = file("[faults]\ndrop_rate = \"0.1\"\n");
    let err = load_err(&config, &env(&[]), &[]);
    assert!(
        err.contains("faults.drop_rate") && err.contains("expected a number, found string"),
        "{err}"
    );
    let err = load_err(
        &ConfigFile::Default,
        &env(&[("CELLAR_FAULTS_SEED", "-1")]),
        &[],
    );
    assert!(
        err.contains("faults.seed") && err.contains("whole number"),
        "{err}"
    );
}

#[test]
fn jwt_mode_needs_a_long_secret_to_serve() {
    let mode = ("CELLAR_AUTH_MODE", "jwt");
    let settings = Settings::load(&ConfigFile::Default, &env(&[mode]), &[]).unwrap();
    let err = settings
        .server_options()
        .expect_err("no secret")
        .to_string();
    assert!(
        err.contains("auth.jwt_secret is not set") && err.contains("CELLAR_AUTH_MODE"),
        "{err}"
    );

    let short = env(&[mode, ("CELLAR_AUTH_JWT_SECRET", "short")]);
    let err = Settings::load(&ConfigFile::Default, &short, &[])
        .unwrap()
        .server_options()
        .expect_err("short");
    assert!(err.to_string().contains("at least 32 bytes"), "{err}");

    let good = env(&[mode, ("CELLAR_AUTH_JWT_SECRET", &"k".repeat(32))]);
    let settings = Settings::load(&ConfigFile::Default, &good, &[]).unwrap();
    assert!(
        !format!("{settings:?}").contains("kkkk"),
        "the secret must not be printed"
    );
    assert!(matches!(
        settings.server_options().unwrap().auth,
        AuthMode::Jwt { .. }
    ));
}

#[test]
fn the_admin_token_is_off_by_default_long_and_never_printed() {
    let default = Settings::load(&ConfigFile::Default, &env(&[]), &[]).unwrap();
    assert_eq!(default.server_options().unwrap().admin_token, None);

    let short = env(&[("CELLAR_AUTH_ADMIN_TOKEN", "short-token")]);
    let err = load_err(&ConfigFile::Default, &short, &[]);
    assert!(
        err.contains("auth.admin_token") && err.contains("at least 32 bytes"),
        "{err}"
    );
    assert!(
        !err.contains("short-token"),
        "the token must not be printed: {err}"
    );
    let spaced = env(&[("CELLAR_AUTH_ADMIN_TOKEN", &format!("{} x", "t".repeat(32)))]);
    let err = load_err(&ConfigFile::Default, &spaced, &[]);
    assert!(err.contains("visible ASCII"), "{err}");

    let token = "t".repeat(40);
    let (_dir, config) = file(&format!("[auth]\nadmin_token = \"{token}\"\n"));
    let settings = Settings::load(&config, &env(&[]), &[]).unwrap();
    assert!(!format!("{settings:?}").contains(&token), "{settings:?}");
    let options = settings.server_options().unwrap();
    assert_eq!(options.admin_token, Some(AdminToken::new(token).unwrap()));
}

#[test]
fn durability_is_sync_by_default_and_async_on_request() {
    let default = Settings::load(&ConfigFile::Default, &env(&[]), &[]).unwrap();
    assert_eq!(default.durability, cellar_engine::Durability::Sync);
    let (_dir, config) = file("[sync]\ndurability = \"async\"\n");
    let chosen = Settings::load(&config, &env(&[]), &[]).unwrap();
    assert_eq!(chosen.durability, cellar_engine::Durability::Async);
    let err = load_err(
        &ConfigFile::Default,
        &env(&[("CELLAR_SYNC_DURABILITY", "eventually")]),
        &[],
    );
    assert!(err.contains("invalid value for sync.durability"), "{err}");
    assert!(err.contains("expected sync or async"), "{err}");
}

#[test]
fn download_parts_reach_the_engine_and_refuse_zero() {
    let defaults = Settings::load(&ConfigFile::Default, &env(&[]), &[])
        .unwrap()
        .engine_config();
    assert_eq!(
        (defaults.download_parallelism, defaults.download_part_bytes),
        (8, 8 << 20)
    );
    let (_dir, config) = file("[sync]\ndownload_parallelism = 16\ndownload_part_bytes = 1048576\n");
    let parts = |vars: &[(&str, &str)]| {
        let engine = Settings::load(&config, &env(vars), &[])
            .unwrap()
            .engine_config();
        (engine.download_parallelism, engine.download_part_bytes)
    };
    assert_eq!(parts(&[]), (16, 1 << 20));
    assert_eq!(
        parts(&[("CELLAR_SYNC_DOWNLOAD_PARALLELISM", "2")]),
        (2, 1 << 20)
    );
    let err = load_err(
        &ConfigFile::Default,
        &env(&[("CELLAR_SYNC_DOWNLOAD_PART_BYTES", "0")]),
        &[],
    );
    assert!(
        err.contains("sync.download_part_bytes") && err.contains("at least 1"),
        "{err}"
    );
}

#[test]
fn compaction_bounds_and_the_log_grace_reach_the_engine_and_refuse_zero() {
    let compaction = |engine: EngineConfig| {
        (
            engine.compact_after_versions,
            engine.compact_after_bytes,
            engine.log_grace,
        )
    };
    let defaults = Settings::load(&ConfigFile::Default, &env(&[]), &[])
        .unwrap()
        .engine_config();
    assert_eq!(
        compaction(defaults),
        (64, None, Duration::from_secs(3600)),
        "64 changes, a quarter of the database (at least 1 MiB), an hour"
    );
    let (_dir, config) = file(
        "[sync]\ncompact_after_versions = 1000\ncompact_after_bytes = 4194304\nlog_grace_secs = 60\n",
    );
    let chosen = |vars: &[(&str, &str)]| {
        compaction(
            Settings::load(&config, &env(vars), &[])
                .unwrap()
                .engine_config(),
        )
    };
    assert_eq!(chosen(&[]), (1000, Some(4 << 20), Duration::from_secs(60)));
    assert_eq!(
        chosen(&[
            ("CELLAR_SYNC_COMPACT_AFTER_VERSIONS", "8"),
            ("CELLAR_SYNC_LOG_GRACE_SECS", "7200"),
        ]),
        (8, Some(4 << 20), Duration::from_secs(7200))
    );
    for (var, key) in [
        (
            "CELLAR_SYNC_COMPACT_AFTER_VERSIONS",
            "sync.compact_after_versions",
        ),
        (
            "CELLAR_SYNC_COMPACT_AFTER_BYTES",
            "sync.compact_after_bytes",
        ),
        ("CELLAR_SYNC_LOG_GRACE_SECS", "sync.log_grace_secs"),
    ] {
        let err = load_err(&ConfigFile::Default, &env(&[(var, "0")]), &[]);
        assert!(err.contains(key) && err.contains("at least 1"), "{err}");
        let err = load_err(&ConfigFile::Default, &env(&[(var, "1h")]), &[]);
        assert!(
            err.contains(key) && err.contains("positive whole number"),
            "{err}"
        );
    }
    let (_dir, config) = file("[sync]\ncompact_after_versions = \"64\"\n");
    let err = load_err(&config, &env(&[]), &[]);
    assert!(
        err.contains("sync.compact_after_versions") && err.contains("expected an integer"),
        "{err}"
    );
}

#[test]
fn connection_keys_reach_the_server_and_must_be_positive() {
    let defaults = Settings::load(&ConfigFile::Default, &env(&[]), &[]).unwrap();
    let options = defaults.server_options().unwrap();
    assert_eq!(
        (options.header_read_timeout, options.max_connections),
        (Duration::from_secs(10), 1024)
    );
    assert_eq!(
        defaults.source_of("server.max_connections"),
        Source::Default
    );

    let (_dir, config) = file("[server]\nheader_read_timeout_secs = 3\nmax_connections = 50\n");
    let settings = Settings::load(
        &config,
        &env(&[("CELLAR_SERVER_MAX_CONNECTIONS", "64")]),
        &[],
    )
    .unwrap();
    let options = settings.server_options().unwrap();
    assert_eq!(
        (options.header_read_timeout, options.max_connections),
        (Duration::from_secs(3), 64)
    );
    assert_eq!(
        settings.source_of("server.max_connections"),
        Source::Env("CELLAR_SERVER_MAX_CONNECTIONS".into())
    );

    for (var, key) in [
        (
            "CELLAR_SERVER_HEADER_READ_TIMEOUT_SECS",
            "server.header_read_timeout_secs",
        ),
        ("CELLAR_SERVER_MAX_CONNECTIONS", "server.max_connections"),
    ] {
        let err = load_err(&ConfigFile::Default, &env(&[(var, "0")]), &[]);
        assert!(err.contains(key) && err.contains("at least 1"), "{err}");
    }
}

#[test]
fn the_store_timeout_is_ten_seconds_unless_set_and_must_be_at_least_one_millisecond() {
    let default = Settings::load(&ConfigFile::Default, &env(&[]), &[]).unwrap();
    assert_eq!(default.store_timeout, Duration::from_secs(10));
    let (_dir, config) = file("[store]\ntimeout_ms = 2500\n");
    let from_file = Settings::load(&config, &env(&[]), &[]).unwrap();
    assert_eq!(from_file.store_timeout, Duration::from_millis(2500));
    let vars = env(&[("CELLAR_STORE_TIMEOUT_MS", "750")]);
    let from_env = Settings::load(&config, &vars, &[]).unwrap();
    assert_eq!(from_env.store_timeout, Duration::from_millis(750));
    for (value, says) in [("0", "at least 1"), ("10s", "positive whole number")] {
        let err = load_err(
            &ConfigFile::Default,
            &env(&[("CELLAR_STORE_TIMEOUT_MS", value)]),
            &[],
        );
        assert!(
            err.contains("store.timeout_ms") && err.contains(says),
            "{value}: {err}"
        );
    }
}

#[test]
fn history_keys_reach_the_engine_and_zero_turns_history_off() {
    let history = |file: &ConfigFile, vars: &[(&str, &str)]| {
        Settings::load(file, &env(vars), &[])
            .unwrap()
            .engine_config()
            .history
    };
    let defaults = history(&ConfigFile::Default, &[]);
    assert_eq!(
        (
            defaults.keep_days,
            defaults.keep_versions,
            defaults.user_restore
        ),
        (7, 100_000, true)
    );
    let (_dir, config) =
        file("[history]\nkeep_days = 30\nkeep_versions = 500\nuser_restore = false\n");
    let from_file = history(&config, &[]);
    assert_eq!(
        (
            from_file.keep_days,
            from_file.keep_versions,
            from_file.user_restore
        ),
        (30, 500, false)
    );
    let from_env = history(
        &config,
        &[
            ("CELLAR_HISTORY_KEEP_DAYS", "0"),
            ("CELLAR_HISTORY_KEEP_VERSIONS", "2"),
            ("CELLAR_HISTORY_USER_RESTORE", "true"),
            ("CELLAR_HISTORY_WALK_BACK_CHANGES", "0"),
        ],
    );
    assert_eq!(
        (defaults.walk_back_changes, from_env.walk_back_changes),
        (1000, 0)
    );
    assert_eq!(
        (
            from_env.keep_days,
            from_env.keep_versions,
            from_env.user_restore
        ),
        (0, 2, true)
    );
    assert!(!from_env.enabled(), "0 days turns history off");

    for (var, key, value, says) in [
        (
            "CELLAR_HISTORY_KEEP_DAYS",
            "history.keep_days",
            "7d",
            "whole number of days",
        ),
        (
            "CELLAR_HISTORY_KEEP_DAYS",
            "history.keep_days",
            "-1",
            "whole number of days",
        ),
        (
            "CELLAR_HISTORY_KEEP_VERSIONS",
            "history.keep_versions",
            "many",
            "whole number of versions",
        ),
        (
            "CELLAR_HISTORY_USER_RESTORE",
            "history.user_restore",
            "yes",
            "not true or false",
        ),
    ] {
        let err = load_err(&ConfigFile::Default, &env(&[(var, value)]), &[]);
        assert!(
            err.contains(key) && err.contains(var) && err.contains(says),
            "{value}: {err}"
        );
    }
    let (_dir, config) = file("[history]\nuser_restore = \"no\"\n");
    let err = load_err(&config, &env(&[]), &[]);
    assert!(
        err.contains("history.user_restore") && err.contains("expected true or false"),
        "{err}"
    );
    let (_dir, config) = file("[history]\nkeep_day = 3\n");
    let err = load_err(&config, &env(&[]), &[]);
    assert!(
        err.contains("history.keep_day") && err.contains("history.keep_days"),
        "the hint lists the section's keys: {err}"
    );
}
