package cli

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// readmeBlock is one fenced code block of README.md.
type readmeBlock struct {
	lang  string
	line  int // line of the opening fence
	lines []string
}

func readmeBlocks(t *testing.T, path string) []readmeBlock {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []readmeBlock
	var cur *readmeBlock
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		if strings.HasPrefix(l, "```") {
			if cur == nil {
				cur = &readmeBlock{lang: strings.TrimSpace(strings.TrimPrefix(l, "```")), line: n}
			} else {
				out = append(out, *cur)
				cur = nil
			}
			continue
		}
		if cur != nil {
			cur.lines = append(cur.lines, l)
		}
	}
	if cur != nil {
		t.Fatalf("README.md: fence at line %d is not closed", cur.line)
	}
	return out
}

// shellCommands joins continuation lines and drops blanks and comments.
func shellCommands(b readmeBlock) []string {
	var cmds []string
	var acc string
	for _, l := range b.lines {
		l = strings.TrimSpace(l)
		if acc == "" && (l == "" || strings.HasPrefix(l, "#")) {
			continue
		}
		if strings.HasSuffix(l, `\`) {
			acc += strings.TrimSuffix(l, `\`) + " "
			continue
		}
		cmds = append(cmds, strings.TrimSpace(acc+l))
		acc = ""
	}
	return cmds
}

// shellWords splits a command line into words with shell quoting (single
// and double quotes, no globbing) and expands $VAR / ${VAR} from vars
// outside single quotes.
func shellWords(s string, vars map[string]string) []string {
	var words []string
	var w strings.Builder
	in := false
	var quote rune
	expand := func(rest string) (string, int) {
		m := regexp.MustCompile(`^\$(\{[A-Za-z_][A-Za-z0-9_]*\}|[A-Za-z_][A-Za-z0-9_]*)`).FindString(rest)
		if m == "" {
			return "$", 1
		}
		name := strings.Trim(m[1:], "{}")
		return vars[name], len(m)
	}
	for i := 0; i < len(s); {
		c := rune(s[i])
		switch {
		case quote == '\'' && c == '\'':
			quote = 0
			i++
		case quote == '"' && c == '"':
			quote = 0
			i++
		case quote == 0 && (c == '\'' || c == '"'):
			quote, in = c, true
			i++
		case quote != '\'' && c == '$':
			v, n := expand(s[i:])
			w.WriteString(v)
			in = true
			i += n
		case quote == 0 && (c == ' ' || c == '\t'):
			if in {
				words = append(words, w.String())
				w.Reset()
				in = false
			}
			i++
		default:
			w.WriteRune(c)
			in = true
			i++
		}
	}
	if in {
		words = append(words, w.String())
	}
	return words
}

// kurerArgs returns the arguments of a kurer invocation ("bin/kurer ARGS"
// or "kurer ARGS"), or false.
func kurerArgs(words []string) ([]string, bool) {
	if len(words) > 0 && (words[0] == "bin/kurer" || words[0] == "kurer" || words[0] == "./bin/kurer") {
		return words[1:], true
	}
	return nil, false
}

var (
	reAssign = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)=\$\((.*)\)$`)
	reSource = regexp.MustCompile(`^source <\((.*)\)$`)
)

// makeTargets is what the README's make commands must be in the Makefile,
// and the test that covers each: make run is `bin/kurer demo` after a
// build, which TestDemoOnce runs (with --once: the same code without the
// waiting); make test is this very suite; make docs is checked by
// internal/cli/gendocs TestDocsCurrent.
var makeTargets = map[string]struct {
	recipe  string // must appear in the target's recipe
	covered string
}{
	"run":  {"$(BIN) demo", "TestDemoOnce"},
	"test": {"$(GO) test -race", "the suite itself"},
	"docs": {"$(GO) run ./internal/cli/gendocs docs/cli", "gendocs.TestDocsCurrent"},
}

// makeRecipe returns the recipe lines of target in the Makefile.
func makeRecipe(t *testing.T, root, target string) (string, bool) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	var recipe []string
	found := false
	for _, l := range strings.Split(string(data), "\n") {
		if found {
			if !strings.HasPrefix(l, "\t") {
				break
			}
			recipe = append(recipe, strings.TrimSpace(l))
			continue
		}
		if strings.HasPrefix(l, target+":") {
			found = true
			recipe = append(recipe, strings.TrimSpace(strings.TrimPrefix(l, target+":")))
		}
	}
	return strings.Join(recipe, "\n"), found
}

// TestReadme checks the README's promises: it opens with the two commands,
// every relative link resolves, every shell command in a fenced block is
// run here for real against a running gateway and two agents (or is a make
// target whose recipe is checked and whose work another test does), and
// every inline `kurer ...` names a real command.
func TestReadme(t *testing.T) {
	root := repoRoot(t)
	readme := filepath.Join(root, "README.md")
	blocks := readmeBlocks(t, readme)

	t.Run("opens with make run and make test", func(t *testing.T) {
		data, _ := os.ReadFile(readme)
		lines := strings.Split(string(data), "\n")
		if len(blocks) == 0 || blocks[0].line > 3 || strings.Join(shellCommands(blocks[0]), ";") != "make run;make test" {
			t.Fatalf("README.md must start with the two commands make run and make test; first lines: %q", lines[:min(6, len(lines))])
		}
	})

	t.Run("links resolve", func(t *testing.T) {
		data, _ := os.ReadFile(readme)
		for _, m := range regexp.MustCompile(`\]\(([^)#\s]+)(#[^)]*)?\)`).FindAllStringSubmatch(string(data), -1) {
			link := m[1]
			if strings.Contains(link, "://") || strings.HasPrefix(link, "mailto:") {
				continue
			}
			target := filepath.Join(root, filepath.FromSlash(link))
			if r, err := filepath.Rel(root, target); err != nil || strings.HasPrefix(r, "..") {
				t.Errorf("README.md links to %s, outside the repository", link)
				continue
			}
			if _, err := os.Stat(target); err != nil {
				t.Errorf("README.md links to %s, which does not exist", link)
			}
		}
	})

	t.Run("inline commands exist", func(t *testing.T) {
		data, _ := os.ReadFile(readme)
		// Prose only: drop the fenced blocks (run below).
		var prose []string
		fenced := false
		for _, l := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(l, "```") {
				fenced = !fenced
				continue
			}
			if !fenced {
				prose = append(prose, l)
			}
		}
		for _, m := range regexp.MustCompile("`((?:bin/)?kurer [^`]*|make [a-z-]+)`").FindAllStringSubmatch(strings.Join(prose, "\n"), -1) {
			words := shellWords(m[1], nil)
			if words[0] == "make" {
				if _, ok := makeRecipe(t, root, words[1]); !ok {
					t.Errorf("README.md mentions `%s`, but the Makefile has no target %s", m[1], words[1])
				}
				continue
			}
			args, _ := kurerArgs(words)
			var path []string
			for _, a := range args {
				if strings.HasPrefix(a, "-") {
					break
				}
				path = append(path, a)
			}
			root := NewRootCommand()
			root.InitDefaultCompletionCmd()
			cmd, _, err := root.Find(path)
			if err != nil || cmd == root && len(path) > 0 {
				t.Errorf("README.md mentions `%s`, but kurer has no such command", m[1])
				continue
			}
			if cmd.CommandPath() != strings.Join(append([]string{"kurer"}, path...), " ") {
				t.Errorf("README.md mentions `%s`, but that resolves to %q", m[1], cmd.CommandPath())
				continue
			}
			if err := cmd.ParseFlags(args[len(path):]); err != nil {
				t.Errorf("README.md mentions `%s`: %v", m[1], err)
			}
		}
	})

	t.Run("fenced commands run", func(t *testing.T) {
		n := startTestNet(t)
		tr := n.agents[0]
		t.Setenv(envAgentURL, tr.url)
		t.Setenv(envAgentToken, tr.token)
		t.Chdir(root)
		vars := map[string]string{}
		ran := 0
		for _, b := range blocks {
			if b.lang != "sh" && b.lang != "bash" && b.lang != "shell" {
				continue
			}
			for _, c := range shellCommands(b) {
				words := shellWords(c, vars)
				if len(words) == 2 && words[0] == "make" {
					mt, ok := makeTargets[words[1]]
					if !ok {
						t.Errorf("README.md line %d: `%s` is not covered by any test; add it to makeTargets with the test that does its work", b.line, c)
						continue
					}
					recipe, found := makeRecipe(t, root, words[1])
					if !found || !strings.Contains(recipe, mt.recipe) {
						t.Errorf("Makefile target %s no longer runs %q (covered by %s): %q", words[1], mt.recipe, mt.covered, recipe)
					}
					continue
				}
				var capture string
				if m := reAssign.FindStringSubmatch(c); m != nil {
					capture, words = m[1], shellWords(m[2], vars)
				} else if m := reSource.FindStringSubmatch(c); m != nil {
					words = shellWords(m[1], vars)
				}
				args, ok := kurerArgs(words)
				if !ok {
					t.Errorf("README.md line %d: `%s` is neither a kurer command nor a covered make target; run it in a test", b.line, c)
					continue
				}
				out, stderr, code := runCLI(t.Context(), args...)
				ran++
				if code != ExitOK {
					t.Errorf("README.md line %d: `%s` exited %d: %s", b.line, c, code, stderr)
					continue
				}
				if strings.TrimSpace(out) == "" {
					t.Errorf("README.md line %d: `%s` printed nothing", b.line, c)
				}
				if capture != "" {
					vars[capture] = strings.TrimSpace(out)
				}
			}
		}
		if ran < 4 {
			t.Fatalf("only %d README commands ran", ran)
		}
	})
}

func TestShellWords(t *testing.T) {
	vars := map[string]string{"ID": "abc", "X": "a b"}
	for in, want := range map[string][]string{
		`kurer status $ID`:            {"kurer", "status", "abc"},
		`kurer status "${ID}x" '$ID'`: {"kurer", "status", "abcx", "$ID"},
		`a "$X" $X`:                   {"a", "a b", "a b"}, // no word splitting
		`a  ""  b`:                    {"a", "", "b"},
	} {
		got := shellWords(in, vars)
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("%s -> %q, want %q", in, got, want)
		}
	}
}
