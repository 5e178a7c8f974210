//! The "Examples:" sections of `--help`. clap wraps help text at the terminal's width, which
//! broke long example commands in the middle and made them fail when copied; here each
//! command is split before its flags into shell continuation lines (` \`) that fit in 78
//! columns, so clap never needs to wrap them and every line pastes as it reads.

/// Widest example line, indentation and the trailing ` \` included.
const EXAMPLE_LINE_COLUMNS_MAX: usize = 78;

/// `Examples:` followed by each command, split into continuation lines where needed.
pub fn examples(commands: &[&str]) -> String {
    let title = if commands.len() == 1 {
        "Example:"
    } else {
        "Examples:"
    };
    let mut text = title.to_string();
    for command in commands {
        text.push('\n');
        text += &example(command);
    }
    text
}

/// [`examples`], then a paragraph (exit codes, notes).
pub fn examples_with(commands: &[&str], paragraph: &str) -> String {
    format!("{}\n\n{paragraph}", examples(commands))
}

/// One command: `  imlab ...`, continued on lines indented by 6 columns.
fn example(command: &str) -> String {
    let mut lines: Vec<String> = vec!["  ".to_string()];
    // Keep a flag with its value: split only before a word starting with "--".
    let mut chunks: Vec<String> = Vec::new();
    for word in command.split(' ') {
        match chunks.last_mut() {
            Some(last) if !word.starts_with("--") => {
                last.push(' ');
                last.push_str(word);
            }
            _ => chunks.push(word.to_string()),
        }
    }
    for chunk in chunks {
        let line = lines.last_mut().expect("one line at least");
        let fresh = line.trim().is_empty();
        // Room for " chunk" and a possible " \".
        if !fresh && line.len() + 1 + chunk.len() + 2 > EXAMPLE_LINE_COLUMNS_MAX {
            line.push_str(" \\");
            lines.push(format!("      {chunk}"));
        } else {
            if !fresh {
                line.push(' ');
            }
            line.push_str(&chunk);
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_examples_continue_before_a_flag_and_fit() {
        let text = examples(&[
            "imlab heartbeat compare --strategies wechat,imlab-adaptive,fixed:4m45s --profiles cmcc-3g,ct-3g --devices 20 --duration 24h --out report",
            "imlab report out/load",
        ]);
        assert_eq!(
            text,
            "Examples:\n  imlab heartbeat compare --strategies wechat,imlab-adaptive,fixed:4m45s \\\n      \
             --profiles cmcc-3g,ct-3g --devices 20 --duration 24h --out report\n  imlab report out/load"
        );
        assert!(text.lines().all(|l| l.len() <= EXAMPLE_LINE_COLUMNS_MAX));
    }
}
