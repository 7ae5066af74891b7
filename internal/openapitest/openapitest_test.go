package openapitest

import "testing"

// recorder is a testing.TB that records failures instead of failing.
type recorder struct {
	testing.TB
	failed bool
}

func (r *recorder) Helper()               {}
func (r *recorder) Errorf(string, ...any) { r.failed = true }
func (r *recorder) Fatalf(string, ...any) { r.failed = true; panic(r) }

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		bad  bool
	}{
		{"good", "openapi: 3.0.3\npaths: {}\ncomponents: {schemas: {A: {type: string}, B: {$ref: '#/components/schemas/A'}}}\n", false},
		{"unquoted comma", "openapi: 3.0.3\nx: {description: a, e.g. b}\n", true},
		{"dangling ref", "openapi: 3.0.3\nx: {$ref: '#/components/schemas/Nope'}\n", true},
		{"not openapi 3", "swagger: '2.0'\n", true},
		{"not yaml", "openapi: [\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{TB: t}
			func() {
				defer func() {
					if p := recover(); p != nil && p != r {
						panic(p)
					}
				}()
				Check(r, []byte(tc.doc))
			}()
			if r.failed != tc.bad {
				t.Errorf("failed = %v, want %v", r.failed, tc.bad)
			}
		})
	}
}
