package nat_test

import (
	"go/parser"
	"go/token"
	"strings"
	"testing"
)

// TestPackageDocs checks that nat and natlab open with a package doc that
// says what, how and why (STYLE.md habit 16).
func TestPackageDocs(t *testing.T) {
	for dir, name := range map[string]string{".": "nat", "natlab": "natlab"} {
		pkgs, err := parser.ParseDir(token.NewFileSet(), dir, nil, parser.ParseComments|parser.PackageClauseOnly)
		if err != nil {
			t.Fatal(err)
		}
		var doc string
		for _, f := range pkgs[name].Files {
			if f.Doc != nil {
				if doc != "" {
					t.Errorf("%s: package doc in more than one file", name)
				}
				doc = f.Doc.Text()
			}
		}
		if !strings.HasPrefix(doc, "Package "+name+" ") {
			t.Errorf("%s: package doc missing or not starting with %q", name, "Package "+name)
		}
		for _, h := range []string{"# How", "# Why this shape"} {
			if !strings.Contains(doc, h) {
				t.Errorf("%s: package doc lacks a %q section", name, h)
			}
		}
	}
}
