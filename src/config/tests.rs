//! Tests of the settings: sizes, durations, aliases, errors that name the setting.
#[cfg(test)]
mod settings {
    use super::super::*;
    use clap::CommandFactory;
    use clap::Parser;
    use std::collections::HashMap;

    #[test]
    fn sizes() {
        let cases = [
            ("0", Some(0)),
            ("5368709120", Some(5 << 30)),
            ("5G", Some(5 << 30)),
            ("500M", Some(500 << 20)),
            ("64MiB", Some(64 << 20)),
            ("1k", Some(1024)),
            ("1.5G", Some(3 << 29)),
            (" 2 G ", Some(2 << 30)),
            ("5X", None),
            ("", None),
            ("-1", None),
            ("G", None),
            ("99999999999999999999G", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_size(s), want, "{s:?}");
        }
    }

    #[test]
    fn seconds_and_bools() {
        assert_eq!(parse_seconds("0.9"), Some(Duration::from_millis(900)));
        assert_eq!(parse_seconds("1800"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_seconds("-1"), None);
        assert_eq!(parse_seconds("abc"), None);
        assert_eq!(parse_seconds("inf"), None);
        for t in ["1", "true", "TRUE", "Yes", "on"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["0", "false", "False", "no", "OFF", ""] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        assert_eq!(parse_bool("maybe"), None);
    }

    #[test]
    fn log_levels() {
        let cases = [
            ("WARNING", "warn"),
            ("CRITICAL", "error"),
            ("20", "info"),
            ("10", "info,roxpi=debug"),
            ("debug", "info,roxpi=debug"),
            ("info", "info"),
            ("info,roxpi::access=warn", "info,roxpi::access=warn"),
        ];
        for (s, want) in cases {
            assert_eq!(translate_log_level(s), want, "{s}");
        }
    }

    #[test]
    fn index_urls() {
        assert_eq!(
            parse_index_url("https://pypi.org/simple").unwrap().as_str(),
            "https://pypi.org/simple/"
        );
        assert_eq!(
            parse_index_url("http://h:8080/").unwrap().as_str(),
            "http://h:8080/"
        );
        assert!(parse_index_url("ftp://h/simple/").is_err());
        assert!(parse_index_url("not a url").is_err());
        assert!(parse_index_url("https://h/simple/?x=1").is_err());
        let with_creds = parse_index_url("https://user:secret@h/simple/").unwrap();
        assert_eq!(with_creds.password(), Some("secret"));
    }

    #[test]
    fn aliases_and_empty_values() {
        let env: HashMap<&str, &str> = HashMap::from([
            ("PROXPI_INDEX_URL", "http://proxpi/simple/"),
            ("ROXPI_INDEX_TTL", ""),
            ("PROXPI_INDEX_TTL", "60"),
            ("ROXPI_CACHE_SIZE", "1G"),
            ("PROXPI_CACHE_SIZE", "2G"),
            ("PROXPI_EXTRA_INDEX_TTL", "30"),
            ("GROXPI_LOGGING_LEVEL", "DEBUG"),
            ("ROXPI_BIND", ""),
        ]);
        let resolved: HashMap<&str, Option<String>> =
            resolve_aliases(|n| env.get(n).map(|v| v.to_string()))
                .into_iter()
                .collect();
        assert_eq!(
            resolved["ROXPI_INDEX_URL"].as_deref(),
            Some("http://proxpi/simple/")
        );
        assert_eq!(resolved["ROXPI_INDEX_TTL"].as_deref(), Some("60"));
        assert_eq!(
            resolved["ROXPI_CACHE_SIZE"].as_deref(),
            Some("1G"),
            "ROXPI_ wins"
        );
        assert_eq!(resolved["ROXPI_EXTRA_INDEX_TTLS"].as_deref(), Some("30"));
        assert_eq!(resolved["ROXPI_LOG"].as_deref(), Some("DEBUG"));
        assert_eq!(resolved["ROXPI_BIND"], None);
        assert_eq!(resolved["ROXPI_OFFLINE"], None);
    }

    fn cli(args: &[&str]) -> Cli {
        let mut v = vec!["roxpi"];
        v.extend_from_slice(args);
        Cli::parse_from(v)
    }

    /// Every setting fed a huge, a negative and a malformed value: an
    /// error or a value, never a panic; durations name their maximum.
    #[test]
    fn huge_negative_and_malformed_values_never_panic() {
        let values = [
            "1e300",
            "18446744073709551616",
            "18446744073709551615",
            "-1",
            "-1e300",
            "NaN",
            "inf",
            "10000y",
            "\u{7f}\u{0}x",
            "",
        ];
        let flags: Vec<String> = Cli::command()
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_owned))
            .filter(|l| l != "config" && l != "cache-dir")
            .collect();
        assert!(flags.len() > 20, "{flags:?}");
        for flag in &flags {
            for v in values {
                let arg = format!("--{flag}={v}");
                if let Ok(cli) = Cli::try_parse_from(["roxpi", arg.as_str()]) {
                    let _ = Settings::from_cli(&cli);
                }
            }
        }
        let durations = [
            ("--index-ttl", "ROXPI_INDEX_TTL"),
            ("--connect-timeout", "ROXPI_CONNECT_TIMEOUT"),
            ("--read-timeout", "ROXPI_READ_TIMEOUT"),
            ("--download-timeout", "ROXPI_DOWNLOAD_TIMEOUT"),
            ("--stale-while-revalidate", "ROXPI_STALE_WHILE_REVALIDATE"),
        ];
        for (flag, setting) in durations {
            for v in ["1e300", "-1", "NaN", "soon"] {
                let arg = format!("{flag}={v}");
                let e = Settings::from_cli(&cli(&[&arg])).unwrap_err().to_string();
                assert!(
                    e.contains(setting) && e.contains("1000000000"),
                    "{flag} {v}: {e}"
                );
                assert_eq!(e.lines().count(), 1, "{e}");
            }
        }
        let e = Settings::from_cli(&cli(&["--min-release-age=14"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ROXPI_MIN_RELEASE_AGE value \"14\"")
                && e.contains("needs a unit")
                && !e.contains("ROXPI_UNTIMED"),
            "{e}"
        );
        for (flag, setting) in [
            ("--cooldown-mode=maybe", "ROXPI_COOLDOWN_MODE"),
            ("--untimed=sometimes", "ROXPI_UNTIMED"),
        ] {
            let e = Settings::from_cli(&cli(&[flag])).unwrap_err().to_string();
            assert!(e.starts_with(&format!("invalid {setting} value")), "{e}");
        }
        for v in ["10000y", "1e300d"] {
            let arg = format!("--min-release-age={v}");
            let e = Settings::from_cli(&cli(&[&arg])).unwrap_err();
            let e = e.to_string();
            assert!(e.contains("ROXPI_MIN_RELEASE_AGE"), "{v}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }

    #[test]
    fn help_never_shows_an_empty_default() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("--index-url"), "{help}");
        assert!(!help.contains("[default: \"\"]"), "{help}");
        assert!(help.contains("[default: 5G]"), "real defaults stay shown");
        let after = alias_help();
        assert!(
            after.starts_with("Precedence: a flag wins over its variable"),
            "{after}"
        );
    }

    #[test]
    fn startup_lines_say_the_mode_the_storage_the_config_file_and_tls() {
        let s = Settings::from_cli(&cli(&["--offline", "1", "--cache-size", "2G"])).unwrap();
        let lines = s.startup_lines().join("\n");
        for want in [
            "offline mode (ROXPI_OFFLINE)",
            "storage: local,",
            "cap 2.0 GiB",
            "config file: none (ROXPI_CONFIG unset)",
            "TLS: off",
        ] {
            assert!(lines.contains(want), "{want}:\n{lines}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roxpi.toml");
        std::fs::write(&path, "min-release-age = \"7d\"\n[[route]]\nprefix = \"/x/\"\nindexes = [\"https://pypi.org/simple/\"]\n").unwrap();
        let s = Settings::from_cli(&cli(&[
            "--config",
            path.to_str().unwrap(),
            "--cache-size",
            "0",
        ]))
        .unwrap();
        let lines = s.startup_lines().join("\n");
        assert!(!lines.contains("offline"), "{lines}");
        assert!(
            lines.contains("storage: none (ROXPI_CACHE_SIZE=0)"),
            "{lines}"
        );
        assert!(
            lines.contains("1 routes; policy: cooldown 604800s"),
            "{lines}"
        );
    }

    #[test]
    fn routes_and_the_global_setting_accept_the_same_strategies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roxpi.toml");
        for (spelling, want) in [
            ("merge", Some(Strategy::Merge)),
            ("first-index", Some(Strategy::FirstIndex)),
            ("first_index", Some(Strategy::FirstIndex)),
            ("random", None),
        ] {
            let global = Settings::from_cli(&cli(&["--index-strategy", spelling]));
            assert_eq!(global.as_ref().ok().map(|s| s.strategy), want, "{spelling}");
            std::fs::write(
                &path,
                format!("[[route]]\nprefix = \"/x/\"\nindexes = [\"https://pypi.org/simple/\"]\nstrategy = \"{spelling}\"\n"),
            )
            .unwrap();
            let route = Settings::from_cli(&cli(&["--config", path.to_str().unwrap()]));
            match (route, want) {
                (Ok(s), Some(want)) => assert_eq!(s.routes[0].strategy, want, "{spelling}"),
                (Err(e), None) => assert!(e.to_string().contains("[[route]] strategy"), "{e}"),
                (got, want) => panic!("{spelling}: {:?} for {want:?}", got.map(|s| s.routes.len())),
            }
        }
    }

    #[test]
    fn ttls_in_the_file_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        for (toml, setting) in [
            (
                "[[index]]\nurl = \"https://pypi.org/simple/\"\nttl = 18446744073709551615\n",
                "[[index]] ttl",
            ),
            (
                "[[index]]\nurl = \"https://pypi.org/simple/\"\nttl = -5\n",
                "[[index]] ttl",
            ),
            (
                "[[route]]\nprefix = \"/x/\"\nindexes = [\"https://pypi.org/simple/\"]\nttl = 1e300\n",
                "[[route]] ttl",
            ),
        ] {
            let path = dir.path().join("roxpi.toml");
            std::fs::write(&path, toml).unwrap();
            let e = Settings::from_cli(&cli(&["--config", path.to_str().unwrap()]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(setting) && e.contains("1000000000"), "{toml}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }

    #[test]
    fn hosted_indexes_from_the_token_or_the_file() {
        let s = Settings::from_cli(&cli(&[])).unwrap();
        assert!(
            s.hosting.is_none(),
            "no token, no [[hosted]]: nothing hosted"
        );
        let s = Settings::from_cli(&cli(&["--upload-token", "t0k", "--cache-dir", "/c"])).unwrap();
        let h = s.hosting.unwrap();
        assert_eq!(h.indexes.len(), 1);
        assert_eq!(h.indexes[0].name, "local");
        assert!(h.indexes[0].upload_token.as_ref().unwrap().matches("t0k"));
        assert_eq!(h.dir, std::path::Path::new("/c/hosted"));
        assert_eq!(h.upload_max, 1 << 30);
        assert_eq!(h.max_bytes, None);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roxpi.toml");
        std::fs::write(
            &path,
            "[[hosted]]\nname = \"team-a\"\nallow-upstream = [\"acme-*\"]\nread-token = \"r\"\n\n[[hosted]]\nname = \"team_b\"\nupload-token = \"own\"\n",
        )
        .unwrap();
        let config = path.to_str().unwrap();
        let s = Settings::from_cli(&cli(&["--config", config, "--upload-token", "t0k"])).unwrap();
        let h = s.hosting.unwrap();
        let names: Vec<&str> = h.indexes.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            names,
            ["team-a", "team_b"],
            "the file's indexes replace local"
        );
        assert!(h.indexes[0].upload_token.as_ref().unwrap().matches("t0k"));
        assert!(h.indexes[1].upload_token.as_ref().unwrap().matches("own"));
        assert!(h.indexes[0].read_token.is_some() && h.indexes[1].read_token.is_none());
        assert_eq!(h.indexes[0].allow_upstream.len(), 1);

        for (toml, want) in [
            ("[[hosted]]\nname = \"../x\"\n", "[[hosted]] name"),
            ("[[hosted]]\nname = \"Local\"\n", "[[hosted]] name"),
            (
                "[[hosted]]\nname = \"a\"\n[[hosted]]\nname = \"a\"\n",
                "twice",
            ),
            (
                "[[hosted]]\nname = \"a\"\nallow-upstream = [\"[\"]\n",
                "allow-upstream",
            ),
            ("[[hosted]]\nname = \"a\"\nprefix = \"/x/\"\n", "prefix"),
            (
                "[[hosted]]\nname = \"a\"\n[[route]]\nprefix = \"/x/\"\nindexes = [\"https://pypi.org/simple/\"]\nhosted = [\"b\"]\n",
                "lists hosted index \"b\"",
            ),
        ] {
            std::fs::write(&path, toml).unwrap();
            let e = Settings::from_cli(&cli(&["--config", config]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{toml}: {e}");
        }
        for (args, setting) in [
            (
                &["--upload-token", "t", "--upload-max", "big"][..],
                "ROXPI_UPLOAD_MAX",
            ),
            (
                &["--upload-token", "t", "--upload-max", "0"][..],
                "ROXPI_UPLOAD_MAX",
            ),
            (
                &["--upload-token", "t", "--hosted-max", "x"][..],
                "ROXPI_HOSTED_MAX",
            ),
            (
                &["--upload-token", "t", "--hosted-sync", "0"][..],
                "ROXPI_HOSTED_SYNC",
            ),
        ] {
            let e = Settings::from_cli(&cli(args)).unwrap_err().to_string();
            assert!(e.contains(setting), "{args:?}: {e}");
        }
    }

    #[test]
    fn settings_errors_name_the_setting() {
        let cases: &[(&[&str], &str)] = &[
            (&["--bind", "nope"], "ROXPI_BIND"),
            (&["--index-ttl", "x"], "ROXPI_INDEX_TTL"),
            (&["--index-url", "ftp://x/"], "ROXPI_INDEX_URL"),
            (
                &[
                    "--extra-index-urls",
                    "http://a/,http://b/",
                    "--extra-index-ttls",
                    "1",
                ],
                "ROXPI_EXTRA_INDEX_TTLS",
            ),
            (&["--index-strategy", "random"], "ROXPI_INDEX_STRATEGY"),
            (&["--index-cache-size", "lots"], "ROXPI_INDEX_CACHE_SIZE"),
            (&["--offline", "perhaps"], "ROXPI_OFFLINE"),
            (&["--workers", "0"], "ROXPI_WORKERS"),
            (&["--log-format", "xml"], "ROXPI_LOG_FORMAT"),
            (&["--ca-file", "/nonexistent/ca.pem"], "ROXPI_CA_FILE"),
            (
                &["--upstream-allow", "loopback,intranet"],
                "ROXPI_UPSTREAM_ALLOW",
            ),
        ];
        for (args, setting) in cases {
            let e = Settings::from_cli(&cli(args)).unwrap_err();
            assert!(e.to_string().contains(setting), "{args:?}: {e}");
        }
        let e = Settings::from_cli(&cli(&["--index-url", "ftp://u:secret@x/"])).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn settings_defaults_and_extras() {
        let s = Settings::from_cli(&cli(&["--offline"])).unwrap();
        assert!(s.offline, "a bare boolean flag means on");
        let s = Settings::from_cli(&cli(&["--extra-index-urls", "http://a/x, http://b/"])).unwrap();
        assert_eq!(s.indexes.len(), 3);
        assert_eq!(s.indexes[0].url.as_str(), PYPI);
        assert_eq!(s.indexes[0].ttl, Duration::from_secs(1800));
        assert_eq!(s.indexes[1].url.as_str(), "http://a/x/");
        assert_eq!(s.indexes[2].ttl, Duration::from_secs(180));
        assert_eq!(s.strategy, Strategy::Merge);
        assert_eq!(s.index_cache_size, 64 << 20);
        assert_eq!(s.download_timeout, None, "no forced redirect by default");
        assert_eq!(s.request_deadline, Duration::from_secs(120));
        let s = Settings::from_cli(&cli(&["--download-timeout", "0.9"])).unwrap();
        assert_eq!(s.download_timeout, Some(Duration::from_millis(900)));
        assert!(!s.offline);
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        assert_eq!(
            s.workers,
            cpus.max(2),
            "auto: one worker per CPU, at least 2"
        );
        let s = Settings::from_cli(&cli(&["--workers", "7"])).unwrap();
        assert_eq!(s.workers, 7);
    }
}

#[cfg(test)]
mod s3 {
    use super::super::*;
    use clap::Parser;
    use std::collections::HashMap;

    fn cli(args: &[&str]) -> Cli {
        let mut v = vec!["roxpi"];
        v.extend_from_slice(args);
        Cli::parse_from(v)
    }

    fn creds() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "very-secret"),
        ])
    }

    #[test]
    fn bucket_settings_defaults_and_credentials() {
        let env = creds();
        let get = |n: &str| env.get(n).map(|v| v.to_string());
        let s = s3_settings(&cli(&["--s3-bucket", "b"]), get).unwrap();
        assert_eq!(s.bucket, "b");
        assert_eq!(s.prefix, "roxpi/");
        assert_eq!(s.region, "us-east-1");
        assert_eq!(s.endpoint.as_str(), "https://s3.us-east-1.amazonaws.com/");
        assert!(!s.path_style);
        assert_eq!((s.key_id.as_str(), s.token.as_deref()), ("AKID", None));
        assert!(
            !format!("{s:?}").contains("very-secret"),
            "Debug shows the secret"
        );
        let s = s3_settings(
            &cli(&[
                "--s3-bucket",
                "b",
                "--s3-prefix",
                "/team/cache",
                "--s3-region",
                "eu-west-1",
                "--s3-endpoint",
                "http://127.0.0.1:9000",
                "--s3-path-style",
            ]),
            |n| match n {
                "AWS_SESSION_TOKEN" => Some("tok".into()),
                n => creds().get(n).map(|v| v.to_string()),
            },
        )
        .unwrap();
        assert_eq!(s.prefix, "team/cache/");
        assert_eq!(s.region, "eu-west-1");
        assert_eq!(s.endpoint.as_str(), "http://127.0.0.1:9000/");
        assert!(s.path_style);
        assert_eq!(s.token.as_deref(), Some("tok"));
    }

    #[test]
    fn bucket_setting_errors_name_the_setting() {
        let env = creds();
        let get = |n: &str| env.get(n).map(|v| v.to_string());
        let cases: &[(&[&str], &str)] = &[
            (&[], "ROXPI_S3_BUCKET"),
            (
                &["--s3-bucket", "b", "--s3-endpoint", "ftp://x"],
                "ROXPI_S3_ENDPOINT",
            ),
            (
                &["--s3-bucket", "b", "--s3-endpoint", "http://k:s@x/"],
                "ROXPI_S3_ENDPOINT",
            ),
            (
                &["--s3-bucket", "b", "--s3-path-style", "sideways"],
                "ROXPI_S3_PATH_STYLE",
            ),
        ];
        for (args, setting) in cases {
            let e = s3_settings(&cli(args), get).unwrap_err();
            assert!(e.to_string().contains(setting), "{args:?}: {e}");
            assert!(!e.to_string().contains(":s@"), "{e}");
        }
        let no_secret = |n: &str| (n == "AWS_ACCESS_KEY_ID").then(|| "AKID".to_owned());
        let e = s3_settings(&cli(&["--s3-bucket", "b"]), no_secret).unwrap_err();
        assert!(e.to_string().contains("AWS_SECRET_ACCESS_KEY"), "{e}");
        let e = s3_settings(&cli(&["--s3-bucket", "b"]), |_| None).unwrap_err();
        assert!(e.to_string().contains("AWS_ACCESS_KEY_ID"), "{e}");
        let e = Settings::from_cli(&cli(&["--storage", "nfs"])).unwrap_err();
        assert!(e.to_string().contains("ROXPI_STORAGE"), "{e}");
    }

    #[test]
    fn aws_aliases() {
        let env: HashMap<&str, &str> = HashMap::from([
            ("AWS_REGION", "eu-central-1"),
            ("AWS_ENDPOINT_URL", "http://minio:9000"),
        ]);
        let resolved: HashMap<&str, Option<String>> =
            resolve_aliases(|n| env.get(n).map(|v| v.to_string()))
                .into_iter()
                .collect();
        assert_eq!(resolved["ROXPI_S3_REGION"].as_deref(), Some("eu-central-1"));
        assert_eq!(
            resolved["ROXPI_S3_ENDPOINT"].as_deref(),
            Some("http://minio:9000")
        );
    }
}

#[cfg(test)]
mod alias_tests {
    use super::super::*;
    use clap::CommandFactory;

    /// docs/configuration.md has a row for every setting of `--help`,
    /// with its default and every alias roxpi accepts for it.
    #[test]
    fn the_configuration_doc_lists_every_setting_with_its_default_and_aliases() {
        let doc = include_str!("../../docs/configuration.md");
        let mut checked = 0;
        for arg in Cli::command().get_arguments() {
            let Some(env) = arg.get_env().map(|e| e.to_string_lossy().into_owned()) else {
                continue;
            };
            let row = doc
                .lines()
                .find(|l| l.starts_with("| ") && l.contains(&format!("`{env}`")))
                .unwrap_or_else(|| panic!("{env} has no row in docs/configuration.md"));
            // `| flag / variable | aliases | default | meaning |`
            let cells: Vec<&str> = row.split('|').map(str::trim).skip(1).collect();
            let aliases = SETTINGS
                .iter()
                .find(|(n, _)| *n == env)
                .map_or(&[][..], |(_, a)| *a);
            for alias in aliases {
                assert!(
                    cells[1].contains(alias),
                    "{env}: alias {alias} missing: {row}"
                );
            }
            let shown = !arg.is_hide_default_value_set();
            for default in arg.get_default_values() {
                let d = default.to_string_lossy();
                if shown && !d.is_empty() {
                    assert!(cells[2].contains(&*d), "{env}: default {d} missing: {row}");
                }
            }
            checked += 1;
        }
        assert!(checked >= 30, "{checked} settings");
    }

    #[test]
    fn every_setting_has_its_variable_and_documented_aliases() {
        let envs: Vec<String> = Cli::command()
            .get_arguments()
            .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
            .collect();
        let table: Vec<&str> = SETTINGS.iter().map(|(n, _)| *n).collect();
        for e in &envs {
            assert!(e.starts_with("ROXPI_"), "{e}");
            assert!(table.contains(&e.as_str()), "{e} missing from SETTINGS");
        }
        for n in &table {
            assert!(envs.iter().any(|e| e == n), "{n} has no flag");
        }
        // proxpi's settings (its README) and groxpi's shared ones.
        let proxpi = [
            "PROXPI_INDEX_URL",
            "PROXPI_INDEX_TTL",
            "PROXPI_EXTRA_INDEX_URLS",
            "PROXPI_EXTRA_INDEX_TTLS",
            "PROXPI_EXTRA_INDEX_TTL",
            "PROXPI_CACHE_SIZE",
            "PROXPI_CACHE_DIR",
            "PROXPI_DOWNLOAD_TIMEOUT",
            "PROXPI_CONNECT_TIMEOUT",
            "PROXPI_READ_TIMEOUT",
            "PROXPI_DISABLE_INDEX_SSL_VERIFICATION",
            "PROXPI_BINARY_FILE_MIME_TYPE",
            "PROXPI_LOGGING_LEVEL",
        ];
        let all: Vec<&str> = SETTINGS
            .iter()
            .flat_map(|(_, a)| a.iter().copied())
            .collect();
        for p in proxpi {
            assert!(all.contains(&p), "{p} is not accepted");
            let g = p.replacen("PROXPI_", "GROXPI_", 1);
            if p != "PROXPI_EXTRA_INDEX_TTL" {
                assert!(all.contains(&g.as_str()), "{g} is not accepted");
            }
        }
        let help = alias_help();
        for a in all {
            assert!(help.contains(a), "{a} not in --help");
        }
    }
}

#[cfg(test)]
mod cache_dir_tests {
    use super::super::*;
    use std::ffi::OsString;

    #[test]
    fn cache_dir_defaults() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |n: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        assert_eq!(cache_dir("/c", env(&[])).unwrap(), PathBuf::from("/c"));
        assert_eq!(
            cache_dir("", env(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")])).unwrap(),
            PathBuf::from("/x/roxpi")
        );
        assert_eq!(
            cache_dir("", env(&[("XDG_CACHE_HOME", ""), ("HOME", "/h")])).unwrap(),
            PathBuf::from("/h/.cache/roxpi")
        );
        let e = cache_dir("", env(&[])).unwrap_err();
        assert!(e.to_string().contains("ROXPI_CACHE_DIR"));
    }
}
