//! `atrest completions` and `atrest man`: both generated from the one clap definition, with the
//! name the binary was invoked under (`atrest`, or `kubectl atrest` as a kubectl plugin).

use std::io::Write;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::EXIT_OK;
use crate::cli::args::{Cli, CompletionsArgs, ManArgs};

/// The command as the user sees it: `atrest`, or `kubectl atrest` when invoked as the
/// `kubectl-atrest` plugin.
pub(crate) fn command() -> clap::Command {
    let cmd = Cli::command();
    match invoked_as_plugin() {
        true => cmd.bin_name("kubectl atrest"),
        false => cmd,
    }
}

/// Whether argv[0] is `kubectl-atrest` (kubectl runs plugins by their file name).
pub(crate) fn invoked_as_plugin() -> bool {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .is_some_and(|n| n.starts_with("kubectl-atrest"))
}

/// Prints the completion script for one shell. It completes `atrest` (the plugin is completed
/// by kubectl itself, which does not load these scripts).
pub(crate) fn completions(a: CompletionsArgs) -> anyhow::Result<i32> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "atrest", &mut out);
    write_stdout(&out)?;
    Ok(EXIT_OK)
}

/// Prints the top page, or writes every page into `--dir`.
pub(crate) fn man(a: ManArgs) -> anyhow::Result<i32> {
    let cmd = Cli::command();
    match a.dir {
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            write_stdout(&no_hyphenation(&out))?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
            for e in std::fs::read_dir(&dir)?.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "1") {
                    let text = std::fs::read(&p)?;
                    std::fs::write(&p, no_hyphenation(&text))
                        .with_context(|| format!("cannot write {}", p.display()))?;
                }
            }
        }
    }
    Ok(EXIT_OK)
}

/// Turns hyphenation off after the title line (`.nh`, `.hy 0`): flag names and words such as
/// "undecryptable" are not to be broken across lines.
fn no_hyphenation(roff: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(roff);
    if text.contains("\n.nh\n") {
        return roff.to_vec();
    }
    match text.find(".TH ") {
        Some(at) => {
            let end = text[at..]
                .find('\n')
                .map(|i| at + i + 1)
                .unwrap_or(text.len());
            format!("{}.nh\n.hy 0\n{}", &text[..end], &text[end..]).into_bytes()
        }
        None => format!(".nh\n.hy 0\n{text}").into_bytes(),
    }
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")
}
