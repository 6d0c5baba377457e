//! Stage `config`: kconfig fragments merged onto tinyconfig with the tree's
//! own merge_config.sh, then olddefconfig, then every option a fragment asked
//! for is checked in the final .config (olddefconfig drops unmet ones silently).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::context::Ctx;
use crate::stages::hashing::{stamp_matches, write_stamp, Key};
use crate::stages::make::make;
use crate::stages::tree::Tree;
use crate::sys::progress::Stage;

pub struct Config {
    /// The O= build dir, one per tree and fragment set.
    pub build_dir: PathBuf,
    pub names: Vec<String>,
    /// sha256 of the final .config.
    pub hash: String,
}

/// `None` means "is not set".
pub type Options = BTreeMap<String, Option<String>>;

/// base, the series' own `series.config` if it has one (named after the
/// series; it does not get a build dir of its own), then each `--config` in
/// order, so that a fragment can override an option of the series'
/// (kconfigs/gma-nodebug.config). A `--tree` gets `series.config` when it
/// has the series, and the config stage says which it found; the baseline
/// of `bench alloc` (Common::series_config) gets it although it has not.
pub fn fragments(ctx: &Ctx, tree: &Tree) -> Result<Vec<(String, PathBuf)>> {
    let mut frags = named_fragments(ctx)?;
    // The kernel's suites run on the baseline and on the series with the
    // same config: the series' test options stay out.
    if ctx.common.suite != crate::flags::Suite::Selftests {
        return Ok(frags);
    }
    let series = crate::stages::patches::Series::dir(&ctx.repo, &ctx.common.series)?;
    let own = series.join("series.config");
    let own = own.is_file().then_some(own);
    let shown = own
        .as_ref()
        .map(|p| p.strip_prefix(&ctx.repo).unwrap_or(p).display().to_string());
    let name = crate::stages::patches::series_name(&ctx.common.series);
    let baseline = series_config_forced(ctx, tree);
    if baseline {
        if let Some(c) = &shown {
            eprintln!(
                "[config] the unpatched baseline of series {name}, configured as the series \
                 kernel: {c} is merged right after base too; the options it adds that this \
                 tree does not define are skipped"
            );
        }
    } else if let Some(line) = tree.series.describe(&name, shown.as_deref()) {
        eprintln!("[config] {line}");
    }
    if let Some(own) = own.filter(|_| tree.series.merges_series_config() || baseline) {
        // Right after base (named_fragments puts base first).
        frags.insert(1, (SERIES_FRAGMENT.to_string(), own));
    }
    Ok(frags)
}

const SERIES_FRAGMENT: &str = "series";
/// Added by `--suite kernel`.
pub const KERNEL_SUITES: &str = "kernel-suites";

fn named_fragments(ctx: &Ctx) -> Result<Vec<(String, PathBuf)>> {
    let mut names = vec!["base".to_string()];
    let suite =
        (ctx.common.suite == crate::flags::Suite::Kernel).then(|| KERNEL_SUITES.to_string());
    for n in ctx.common.configs.iter().chain(&suite) {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    names
        .into_iter()
        .map(|n| fragment_path(&ctx.repo, &n))
        .collect()
}

/// A fragment's name and file: `NAME` is `kconfigs/NAME.config`, a name with
/// a `/` is a path.
pub fn fragment_path(repo: &Path, n: &str) -> Result<(String, PathBuf)> {
    if n.contains('/') {
        let p = std::path::absolute(n).with_context(|| format!("--config {n}"))?;
        let stem = p
            .file_stem()
            .map_or_else(|| n.to_string(), |s| s.to_string_lossy().into_owned());
        return if p.is_file() {
            Ok((stem, p))
        } else {
            bail!("--config {n}: no such file")
        };
    }
    let p = repo.join("kconfigs").join(format!("{n}.config"));
    if p.is_file() {
        Ok((n.to_string(), p))
    } else {
        let known = known_fragments(repo).join(", ");
        bail!("--config {n}: no kconfigs/{n}.config (known: {known})")
    }
}

fn known_fragments(repo: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(repo.join("kconfigs"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_suffix(".config")
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub fn parse(text: &str) -> Options {
    let mut opts = Options::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("# ") {
            if let Some(name) = rest.strip_suffix(" is not set") {
                if name.starts_with("CONFIG_") {
                    opts.insert(name.to_string(), None);
                }
            }
        } else if line.starts_with("CONFIG_") {
            if let Some((k, v)) = line.split_once('=') {
                opts.insert(k.to_string(), Some(v.to_string()));
            }
        }
    }
    opts
}

/// Every requested option whose final value differs, as "CONFIG_X=y (got: not set)".
pub fn dropped(requested: &Options, fin: &Options) -> Vec<String> {
    let show = |v: Option<&String>| v.map_or("not set".to_string(), |s| s.clone());
    requested
        .iter()
        .filter_map(|(k, want)| {
            let got = fin.get(k).cloned().flatten();
            let same = match (want.as_deref(), got.as_deref()) {
                (None | Some("n"), None | Some("n")) => true,
                (Some(w), Some(g)) => w == g,
                _ => false,
            };
            (!same).then(|| format!("{k}={} (got: {})", show(want.as_ref()), show(got.as_ref())))
        })
        .collect()
}

/// What olddefconfig's answer depends on besides the fragments: every
/// Kconfig file (committed blobs plus uncommitted edits) and the compiler.
/// Narrower than the whole tree state, so editing a .c file does not re-merge.
fn kconfig_state(tree: &Tree) -> Result<String> {
    let spec = ":(glob)**/Kconfig*";
    let blobs = duct::cmd!("git", "-C", &tree.path, "ls-files", "-s", "--", spec)
        .stdout_capture()
        .run()
        .context("listing the tree's Kconfig files")?;
    let diff = duct::cmd!("git", "-C", &tree.path, "diff", "HEAD", "--", spec)
        .stdout_capture()
        .run()
        .context("diffing the tree's Kconfig files")?;
    let gcc = duct::cmd!("gcc", "--version").read().unwrap_or_default();
    let mut key = Key::new("kconfig-state");
    key.bytes(&blobs.stdout).bytes(&diff.stdout).str(&gcc);
    Ok(key.finish())
}

/// Whether a requested option the tree does not define at all is an error
/// (`Strict`, a normal run) or a note (`Lenient`: a patch of a series checked
/// before the patch that adds the option).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Strict,
    Lenient,
}

pub fn configure(ctx: &Ctx, tree: &Tree, check: Check) -> Result<Config> {
    let frags = fragments(ctx, tree)?;
    let names: Vec<String> = frags.iter().map(|(n, _)| n.clone()).collect();
    let build_dir = ctx.dir("build")?.join(build_dir_name(
        &tree.label,
        &names,
        series_config_forced(ctx, tree),
    ));
    std::fs::create_dir_all(&build_dir)?;
    let mut key = Key::new("config");
    key.str(&kconfig_state(tree)?);
    let mut requested = Options::new();
    for (_, p) in &frags {
        key.file(p)?;
        let text = std::fs::read_to_string(p)?;
        requested.extend(parse(&text));
    }
    let key = key.finish();
    let dot_config = build_dir.join(".config");
    let stamp = build_dir.join(".rig-config-key");
    if !(dot_config.is_file() && stamp_matches(&stamp, &key)) {
        let stage = Stage::start(
            "config",
            &format!("merging {} onto tinyconfig", names.join(" + ")),
        );
        merge(ctx, tree, &build_dir, &frags)?;
        stage.done(&format!("{}", dot_config.display()));
    }
    let final_text = std::fs::read_to_string(&dot_config)
        .with_context(|| format!("reading {}", dot_config.display()))?;
    let mut lost = dropped(&requested, &parse(&final_text));
    if check == Check::Lenient {
        lost.retain(|line| {
            let sym = line.split('=').next().unwrap_or("");
            let defined = defined_in_tree(tree, sym);
            if !defined {
                eprintln!("[config] note: {sym} is not defined in this tree (yet); skipped");
            }
            defined
        });
    }
    if !lost.is_empty() {
        let _ = std::fs::remove_file(&stamp);
        bail!(
            "{} option(s) requested by kconfigs/{{{}}}.config did not survive olddefconfig \
             (an unmet `depends on`, or a typo):\n  {}\nCheck each option's dependencies with \
             `make -C {} O={} menuconfig` (search with /).",
            lost.len(),
            names.join(","),
            lost.join("\n  "),
            tree.path.display(),
            build_dir.display()
        );
    }
    write_stamp(&stamp, &key)?;
    let mut h = Key::new("dotconfig");
    h.str(&final_text);
    Ok(Config {
        build_dir,
        names,
        hash: h.finish(),
    })
}

/// `<tree>-<fragments>`: a tree with the series always builds with the
/// series' fragment, which is left out of its name; a tree without it that
/// gets it anyway (`forced`: the baseline of `bench alloc`) says so, so
/// that it never shares a build dir with the same tree built base only.
fn build_dir_name(label: &str, names: &[String], forced: bool) -> String {
    let dir_names: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| *n != SERIES_FRAGMENT || forced)
        .collect();
    format!("{label}-{}", dir_names.join("+"))
}

/// A tree without the series that gets the series' fragment anyway (the
/// baseline of `bench alloc`).
fn series_config_forced(ctx: &Ctx, tree: &Tree) -> bool {
    ctx.common.series_config && !tree.series.merges_series_config()
}

fn defined_in_tree(tree: &Tree, sym: &str) -> bool {
    let name = sym.trim_start_matches("CONFIG_");
    let pattern = format!("^[[:space:]]*(menu)?config {name}$");
    duct::cmd!(
        "git",
        "-C",
        &tree.path,
        "grep",
        "-q",
        "-E",
        pattern,
        "--",
        ":(glob)**/Kconfig*"
    )
    .stdout_null()
    .stderr_null()
    .unchecked()
    .run()
    .is_ok_and(|o| o.status.success())
}

/// Writes build_dir/.config, touching it only when its content changes so
/// kbuild does not rerun syncconfig for nothing.
fn merge(ctx: &Ctx, tree: &Tree, build_dir: &Path, frags: &[(String, PathBuf)]) -> Result<()> {
    let scratch = build_dir.join(".rig-kconfig");
    std::fs::create_dir_all(&scratch)?;
    make(ctx, tree, &scratch, &["tinyconfig"]).context("make tinyconfig")?;
    let merge_sh = tree.path.join("scripts/kconfig/merge_config.sh");
    let mut args: Vec<String> = vec![
        "-m".into(),
        "-O".into(),
        scratch.display().to_string(),
        scratch.join(".config").display().to_string(),
    ];
    args.extend(frags.iter().map(|(_, p)| p.display().to_string()));
    let out = duct::cmd(&merge_sh, &args)
        .dir(&tree.path)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .context("running merge_config.sh")?;
    if !out.status.success() {
        bail!(
            "merge_config.sh failed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    make(ctx, tree, &scratch, &["olddefconfig"]).context("make olddefconfig")?;
    let new = std::fs::read(scratch.join(".config"))?;
    let target = build_dir.join(".config");
    if std::fs::read(&target).ok().as_deref() != Some(&new[..]) {
        std::fs::write(&target, &new).with_context(|| format!("writing {}", target.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::series_in_tree::SeriesInTree;

    #[test]
    fn parses_set_unset_and_strings() {
        let o =
            parse("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x y\"\n# comment\nCONFIG_D=64\n");
        assert_eq!(o["CONFIG_A"].as_deref(), Some("y"));
        assert_eq!(o["CONFIG_B"], None);
        assert_eq!(o["CONFIG_C"].as_deref(), Some("\"x y\""));
        assert_eq!(o["CONFIG_D"].as_deref(), Some("64"));
        assert_eq!(o.len(), 4);
    }

    #[test]
    fn names_every_dropped_option() {
        let req = parse(
            "CONFIG_TMPFS=y\nCONFIG_SHMEM=y\nCONFIG_NR_CPUS=8\n# CONFIG_X is not set\nCONFIG_Y=n\n",
        );
        let fin = parse("CONFIG_SHMEM=y\nCONFIG_NR_CPUS=64\nCONFIG_X=y\n");
        assert_eq!(
            dropped(&req, &fin),
            vec![
                "CONFIG_NR_CPUS=8 (got: 64)",
                "CONFIG_TMPFS=y (got: not set)",
                "CONFIG_X=not set (got: y)",
            ]
        );
    }

    fn ctx(args: &[&str]) -> Ctx {
        let argv = ["cargo xtask", "config"].iter().chain(args);
        let crate::flags::Cmd::Config(common) =
            <crate::flags::Xtask as clap::Parser>::try_parse_from(argv)
                .expect("parses")
                .cmd
        else {
            panic!("not config")
        };
        Ctx {
            repo: crate::context::repo_root(),
            work: std::env::temp_dir(),
            common,
        }
    }

    fn tree(series: SeriesInTree) -> Tree {
        Tree {
            path: PathBuf::from("/nonexistent"),
            managed: series == SeriesInTree::Managed,
            label: "t".into(),
            series,
        }
    }

    fn managed() -> Tree {
        tree(SeriesInTree::Managed)
    }

    fn plain() -> Tree {
        tree(SeriesInTree::Absent {
            options: vec!["CONFIG_BPF_GLOBAL_MA_TEST".into()],
        })
    }

    fn names(ctx: &Ctx, t: &Tree) -> Vec<String> {
        fragments(ctx, t)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }

    #[test]
    fn the_series_fragment_comes_right_after_base() {
        assert_eq!(names(&ctx(&[]), &managed()), ["base", "series"]);
        // A --config fragment can override the series' options.
        let c = ctx(&["--config", "gma-nodebug", "--config", "preempt"]);
        assert_eq!(
            names(&c, &managed()),
            ["base", "series", "gma-nodebug", "preempt"]
        );
        let (_, path) = &fragments(&c, &managed()).unwrap()[1];
        assert!(
            path.ends_with("patches/global-ma/series.config"),
            "{path:?}"
        );
        let applied = tree(SeriesInTree::Applied {
            options: vec!["CONFIG_BPF_GLOBAL_MA_TEST".into()],
        });
        assert_eq!(names(&c, &applied)[1], "series");
        // The kernel suites leave it out; so does a tree without the
        // series, unless it stands for the series' baseline.
        assert_eq!(
            names(&ctx(&["--suite", "kernel"]), &managed()),
            ["base", "kernel-suites"]
        );
        let mut t = ctx(&[]);
        assert_eq!(names(&t, &plain()), ["base"]);
        t.common.series_config = true;
        assert!(series_config_forced(&t, &plain()));
        assert!(!series_config_forced(&t, &managed()));
        assert_eq!(names(&t, &plain()), ["base", "series"]);
    }

    #[test]
    fn build_dirs_name_the_series_fragment_only_when_forced() {
        let n = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            build_dir_name("linux-6.1", &n(&["base", "series", "gma-nodebug"]), false),
            "linux-6.1-base+gma-nodebug"
        );
        assert_eq!(
            build_dir_name("linux-6.1-baseline-0123abcd", &n(&["base", "series"]), true),
            "linux-6.1-baseline-0123abcd-base+series"
        );
    }

    #[test]
    fn the_nodebug_fragment_turns_the_series_debug_mode_off() {
        // What configure() requests: each fragment's options, later ones
        // winning, so the "not set" line is what gets verified.
        let c = ctx(&["--config", "gma-nodebug"]);
        let mut requested = Options::new();
        for (_, p) in fragments(&c, &managed()).unwrap() {
            requested.extend(parse(&std::fs::read_to_string(p).unwrap()));
        }
        assert_eq!(requested["CONFIG_BPF_GLOBAL_MA_DEBUG"], None);
        assert_eq!(
            requested["CONFIG_BPF_GLOBAL_MA_TEST_NMI"].as_deref(),
            Some("y"),
            "the bench file stays"
        );
        let fin =
            parse("CONFIG_BPF_GLOBAL_MA_TEST_NMI=y\n# CONFIG_BPF_GLOBAL_MA_DEBUG is not set\n");
        let only: Options = requested
            .into_iter()
            .filter(|(k, _)| {
                k.starts_with("CONFIG_BPF_GLOBAL_MA_DEBUG") || k.ends_with("_TEST_NMI")
            })
            .collect();
        assert_eq!(dropped(&only, &fin), Vec::<String>::new());
        let on = parse("CONFIG_BPF_GLOBAL_MA_TEST_NMI=y\nCONFIG_BPF_GLOBAL_MA_DEBUG=y\n");
        assert_eq!(
            dropped(&only, &on),
            ["CONFIG_BPF_GLOBAL_MA_DEBUG=not set (got: y)"]
        );
    }

    #[test]
    fn base_fragment_parses_and_asks_for_the_essentials() {
        let text =
            std::fs::read_to_string(crate::context::repo_root().join("kconfigs/base.config"))
                .unwrap();
        let o = parse(&text);
        for k in [
            "CONFIG_SMP",
            "CONFIG_BPF_SYSCALL",
            "CONFIG_DEBUG_INFO_BTF",
            "CONFIG_PANIC_ON_OOPS",
            "CONFIG_PVH",
        ] {
            assert_eq!(o.get(k).cloned().flatten().as_deref(), Some("y"), "{k}");
        }
    }
}
