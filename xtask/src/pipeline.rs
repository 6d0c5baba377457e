//! The stages in order, each built on the one before; every subcommand
//! stops at the stage it names.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::context::Ctx;
use crate::flags::Common;
use crate::stages::image::Image;
use crate::stages::kbuild::Kernel;
use crate::stages::patches::Series;
use crate::stages::series_in_tree::SeriesInTree;
use crate::stages::tree::{Tree, BASELINE_TAG};
use crate::{
    stages::baseline, stages::image, stages::kbuild, stages::kconfig, stages::patches,
    stages::tree, sys::lock,
};

pub struct Pipeline {
    pub ctx: Ctx,
    /// Build the managed tree at whatever it has checked out (bisect steps).
    pub as_is: bool,
    pub check: crate::stages::kconfig::Check,
    /// The name in reports and run dirs instead of the series' (the baseline).
    pub name: Option<String>,
    _lock: Option<lock::WorkLock>,
}

impl Pipeline {
    pub fn new(common: Common) -> Result<Pipeline> {
        let ctx = Ctx::new(common)?;
        crate::commands::setup::ensure(&ctx.repo)?;
        // A bisect step runs under its parent's lock.
        let lock = if std::env::var_os(lock::HELD_BY_PARENT).is_some() {
            None
        } else {
            Some(lock::acquire(&ctx.work)?)
        };
        Ok(Pipeline {
            ctx,
            as_is: false,
            check: crate::stages::kconfig::Check::Strict,
            name: None,
            _lock: lock,
        })
    }

    /// The same pipeline with other flags, under this pipeline's work-dir lock.
    fn with_common(&self, common: Common) -> Result<Pipeline> {
        Ok(Pipeline {
            ctx: Ctx::new(common)?,
            as_is: self.as_is,
            check: self.check,
            name: None,
            _lock: None,
        })
    }

    /// The same pipeline with extra config fragments, in a build dir of
    /// its own, under this pipeline's work-dir lock.
    pub fn with_configs(&self, extra: &[String]) -> Result<Pipeline> {
        let mut common = self.ctx.common.clone();
        common.configs.extend(extra.iter().cloned());
        self.with_common(common)
    }

    /// The unpatched baseline's worktree (stages/baseline.rs) of this
    /// pipeline's managed tree.
    pub fn baseline_worktree(&self) -> Result<PathBuf> {
        if self.ctx.common.tree.is_some() {
            bail!("the baseline is the pinned tree's {BASELINE_TAG}; a --tree has none");
        }
        let tree = self.tree()?;
        baseline::worktree(&tree.path)
    }

    /// The unpatched baseline built as this pipeline's series kernel is: the
    /// same config fragments, the series' own series.config included (its
    /// options the baseline does not define yet are only reported, as for
    /// check-series), in a build dir of its own (`<tree>-baseline-<hash>-
    /// base+series...`), under this pipeline's work-dir lock, named
    /// `baseline` in reports. Its image needs a `Progs::Only` list: the
    /// series' own BPF objects do not compile against it.
    pub fn baseline(&self) -> Result<Pipeline> {
        let mut common = self.ctx.common.clone();
        common.tree = Some(self.baseline_worktree()?);
        common.series_config = true;
        let mut p = self.with_common(common)?;
        p.check = kconfig::Check::Lenient;
        p.name = Some("baseline".to_string());
        Ok(p)
    }

    /// The series name in reports: `--tree` builds the user's tree as it is.
    pub fn series_name(&self) -> String {
        if let Some(name) = &self.name {
            name.clone()
        } else if self.ctx.common.tree.is_some() {
            "user-tree".to_string()
        } else {
            patches::series_name(&self.ctx.common.series)
        }
    }

    /// On the pinned tree with the whole series every BPF program builds,
    /// so a compile error is a bug in the program. A patch checked on its
    /// own may predate the feature a program uses, and a `--tree` may not
    /// have the series at all: there the program is left out, and its tests
    /// skip with clang's reason.
    pub fn progs(&self) -> image::Progs {
        if self.as_is || self.ctx.common.tree.is_some() {
            image::Progs::LeaveOutFailures
        } else {
            image::Progs::AllMustBuild
        }
    }

    pub fn tree(&self) -> Result<Tree> {
        tree::prepare(&self.ctx)
    }

    pub fn applied(&self) -> Result<Tree> {
        let tree = self.tree()?;
        if tree.managed && !self.as_is {
            let series = Series::load(&self.ctx.repo, &self.ctx.common.series)?;
            patches::apply(&tree, &series)?;
        }
        Ok(tree)
    }

    pub fn configured(&self) -> Result<(Tree, kconfig::Config, String)> {
        let tree = self.applied()?;
        let partial = matches!(tree.series, SeriesInTree::Partial { .. });
        let check = if self.as_is || partial {
            kconfig::Check::Lenient
        } else {
            self.check
        };
        let config = kconfig::configure(&self.ctx, &tree, check)?;
        let state = kbuild::tree_state(&tree)?;
        Ok((tree, config, state))
    }

    pub fn built(&self) -> Result<(Tree, kconfig::Config, Kernel)> {
        let (tree, config, state) = self.configured()?;
        let kernel = kbuild::build(&self.ctx, &tree, &config, &state)?;
        Ok((tree, config, kernel))
    }

    pub fn imaged(&self) -> Result<(kconfig::Config, Kernel, Image)> {
        self.imaged_with(self.progs())
    }

    /// The image with the BPF objects `progs` asks for.
    pub fn imaged_with(&self, progs: image::Progs) -> Result<(kconfig::Config, Kernel, Image)> {
        let (tree, config, kernel) = self.built()?;
        let image = image::build(&self.ctx, &tree, &kernel, progs)?;
        Ok((config, kernel, image))
    }
}
