//! The process a container runs, decided as Kubernetes decides it.
//!
//! This module owns the rules that combine a container's spec with its image's config:
//! - argv: `command` replaces the image's Entrypoint (and then the image's Cmd is ignored;
//!   `args` follow, or nothing); only `args` keeps the Entrypoint and replaces Cmd; neither
//!   runs Entrypoint + Cmd. `$(VAR)` in command and args is expanded against the container's
//!   resolved environment (not the image's, which kubelet cannot see either).
//! - the working directory: the container's `workingDir`, else the image's, else `/`;
//! - the environment: the image's `Env` with the container's variables over it.
//!
//! The image config is a plain struct ([`ImageConfig`]) the agent fills from the OCI config, so
//! the rules are tested without images.

use k8s_openapi::api::core::v1::Container;

use crate::env::{ResolvedEnv, expand};

/// The parts of an OCI image config (`config` in `ImageConfiguration`) that decide the process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `K=V` entries.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// What to run: the input for the runtime's container config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    pub argv: Vec<String>,
    /// `K=V` entries: the image's first, then the container's (a container variable replaces
    /// the image's of the same name in place).
    pub env: Vec<String>,
    pub cwd: String,
    /// The image's `User`, passed on for the agent to combine with the security context.
    pub image_user: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// containerd's wording, which is what users of Kubernetes see for an image with nothing
    /// to run.
    #[error("no command specified")]
    NoCommand,
}

/// Decides the process for `container` from its spec, its image's config and its resolved
/// environment.
pub fn build_process(
    container: &Container,
    image: &ImageConfig,
    env: &ResolvedEnv,
) -> Result<ProcessSpec, CommandError> {
    let expand_all = |items: &[String]| -> Vec<String> {
        items
            .iter()
            .map(|s| expand(s, |name| env.get(name)))
            .collect()
    };
    let command = container.command.as_deref().unwrap_or_default();
    let args = container.args.as_deref().unwrap_or_default();
    let argv = if !command.is_empty() {
        let mut argv = expand_all(command);
        argv.extend(expand_all(args));
        argv
    } else if !args.is_empty() {
        let mut argv = image.entrypoint.clone();
        argv.extend(expand_all(args));
        argv
    } else {
        let mut argv = image.entrypoint.clone();
        argv.extend(image.cmd.iter().cloned());
        argv
    };
    // An empty first element is as good as no command: nothing can be executed.
    if argv.first().is_none_or(String::is_empty) {
        return Err(CommandError::NoCommand);
    }

    let cwd = container
        .working_dir
        .as_deref()
        .filter(|d| !d.is_empty())
        .or(image.working_dir.as_deref().filter(|d| !d.is_empty()))
        .unwrap_or("/")
        .to_string();

    Ok(ProcessSpec {
        argv,
        env: merge_env(&image.env, env),
        cwd,
        image_user: image.user.clone().filter(|u| !u.is_empty()),
    })
}

/// The image's variables with the container's over them. An image entry without `=` is kept
/// as a name with an empty value (`K=`), which is how a runtime would pass it through.
fn merge_env(image_env: &[String], container_env: &ResolvedEnv) -> Vec<String> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match vars.iter_mut().find(|(name, _)| name == k) {
        Some(slot) => slot.1 = v.to_string(),
        None => vars.push((k.to_string(), v.to_string())),
    };
    for entry in image_env {
        let (k, v) = entry.split_once('=').unwrap_or((entry.as_str(), ""));
        if !k.is_empty() {
            set(k, v);
        }
    }
    for (k, v) in &container_env.vars {
        set(k, v);
    }
    vars.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: strings(&["/entry"]),
            cmd: strings(&["--default"]),
            env: strings(&["PATH=/usr/bin", "LANG=C", "BARE"]),
            working_dir: Some("/srv".into()),
            user: Some("1000".into()),
        }
    }

    fn container(command: Option<&[&str]>, args: Option<&[&str]>) -> Container {
        Container {
            name: "c".into(),
            command: command.map(strings),
            args: args.map(strings),
            ..Default::default()
        }
    }

    fn env(vars: &[(&str, &str)]) -> ResolvedEnv {
        ResolvedEnv {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            warnings: vec![],
        }
    }

    #[test]
    fn command_and_args_against_the_image() {
        let e = env(&[]);
        let argv = |c: Container| build_process(&c, &image(), &e).unwrap().argv;
        assert_eq!(
            argv(container(None, None)),
            strings(&["/entry", "--default"])
        );
        assert_eq!(
            argv(container(None, Some(&["-x"]))),
            strings(&["/entry", "-x"])
        );
        assert_eq!(
            argv(container(Some(&["/bin/sh"]), None)),
            strings(&["/bin/sh"])
        );
        assert_eq!(
            argv(container(Some(&["/bin/sh"]), Some(&["-c", "true"]))),
            strings(&["/bin/sh", "-c", "true"])
        );
        // An empty list is "not set", as in Kubernetes.
        assert_eq!(
            argv(container(Some(&[]), Some(&[]))),
            strings(&["/entry", "--default"])
        );
    }

    #[test]
    fn expansion_uses_the_container_env_only() {
        let e = env(&[("GREETING", "hi"), ("WHO", "you")]);
        let c = container(
            Some(&["echo", "$(GREETING)"]),
            Some(&["$(WHO)", "$(PATH)", "$$(WHO)"]),
        );
        let p = build_process(&c, &image(), &e).unwrap();
        assert_eq!(p.argv, strings(&["echo", "hi", "you", "$(PATH)", "$(WHO)"]));
        // The image's Entrypoint and Cmd are never expanded.
        let mut img = image();
        img.cmd = strings(&["$(WHO)"]);
        let p = build_process(&container(None, None), &img, &e).unwrap();
        assert_eq!(p.argv, strings(&["/entry", "$(WHO)"]));
    }

    #[test]
    fn no_command_is_an_error() {
        let img = ImageConfig::default();
        assert_eq!(
            build_process(&container(None, None), &img, &env(&[])),
            Err(CommandError::NoCommand)
        );
        assert_eq!(
            build_process(
                &container(None, Some(&["x"])),
                &ImageConfig::default(),
                &env(&[])
            )
            .map(|p| p.argv),
            Ok(strings(&["x"]))
        );
    }

    #[test]
    fn working_dir_and_env() {
        let e = env(&[("LANG", "en_US.UTF-8"), ("NEW", "1")]);
        let p = build_process(&container(None, None), &image(), &e).unwrap();
        assert_eq!(p.cwd, "/srv");
        assert_eq!(
            p.env,
            strings(&["PATH=/usr/bin", "LANG=en_US.UTF-8", "BARE=", "NEW=1"])
        );
        assert_eq!(p.image_user.as_deref(), Some("1000"));

        let mut c = container(None, None);
        c.working_dir = Some("/work".into());
        assert_eq!(build_process(&c, &image(), &e).unwrap().cwd, "/work");
        let img = ImageConfig {
            working_dir: None,
            ..image()
        };
        assert_eq!(
            build_process(&container(None, None), &img, &e).unwrap().cwd,
            "/"
        );
    }

    proptest! {
        /// Whatever is set, a command given by the container always leads argv and the image's
        /// Cmd never appears after it.
        #[test]
        fn container_command_wins(cmd in proptest::collection::vec("[a-z/]{1,8}", 1..4),
                                  args in proptest::option::of(proptest::collection::vec("[a-z]{0,8}", 0..4))) {
            let c = Container {
                name: "c".into(),
                command: Some(cmd.clone()),
                args: args.clone(),
                ..Default::default()
            };
            let p = build_process(&c, &image(), &env(&[])).unwrap();
            let mut want = cmd;
            want.extend(args.unwrap_or_default());
            prop_assert_eq!(p.argv, want);
        }
    }
}
