package schemas

import (
	"testing"
	"time"
)

func TestValidFodselsnummer(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // "" valid, else the check code
	}{
		{"synthetic child 2014", "15831451235", ""},
		{"synthetic adult 1986", "02878623420", ""},
		{"synthetic D-number 1984", "63918411811", ""},
		{"ordinary fødselsnummer (Skatteetaten's published test example)", "01010100131", ""}, // 01.01.1901
		{"first control digit wrong", "15831451245", CodeChecksum},
		{"second control digit wrong", "15831451236", CodeChecksum},
		{"31 February, control digits right", "31821451240", CodeImplausibleDate},
		{"ten digits", "1583145123", CodePattern},
		{"twelve digits", "158314512350", CodePattern},
		{"letters", "1583145123X", CodePattern},
		{"empty", "", CodePattern},
		{"all zeros", "00000000000", CodeImplausibleDate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := checkFodselsnummer(tt.in); got != tt.want {
				t.Fatalf("checkFodselsnummer(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if ValidFodselsnummer(tt.in) != (tt.want == "") {
				t.Fatalf("ValidFodselsnummer(%q) disagrees", tt.in)
			}
		})
	}
}

// TestFodselsnummerControlDigitsExhaustive: for a fixed date and individual
// number exactly one pair of control digits is valid (or none, when the
// first remainder is 10), so every single-digit change is caught.
func TestFodselsnummerControlDigitsExhaustive(t *testing.T) {
	for ind := 500; ind < 600; ind++ {
		valid := 0
		for k := 0; k < 100; k++ {
			s := "158314" + pad(ind, 3) + pad(k, 2)
			if ValidFodselsnummer(s) {
				valid++
			}
		}
		if valid > 1 {
			t.Fatalf("individual number %d: %d valid control-digit pairs", ind, valid)
		}
	}
	// Every single-digit change of a valid number is refused.
	base := "15831451235"
	for i := 0; i < len(base); i++ {
		for d := byte('0'); d <= '9'; d++ {
			if d == base[i] {
				continue
			}
			s := base[:i] + string(d) + base[i+1:]
			if ValidFodselsnummer(s) {
				t.Errorf("%s (digit %d changed) accepted", s, i)
			}
		}
	}
}

func TestFodselsdatoFromNumber(t *testing.T) {
	tests := map[string]string{
		"15831451235": "2014-03-15", // synthetic, individual number 5xx, 2000s
		"02878623420": "1986-07-02", // synthetic, 2xx, 1900s
		"63918411811": "1984-11-23", // synthetic D-number
		"01010100131": "1901-01-01",
	}
	for in, want := range tests {
		got, ok := FodselsdatoFromNumber(in)
		if !ok || got.Format(time.DateOnly) != want {
			t.Errorf("FodselsdatoFromNumber(%s) = %v %v, want %s", in, got, ok, want)
		}
	}
	if _, ok := FodselsdatoFromNumber("15831451236"); ok {
		t.Error("invalid number gave a date")
	}
}

func TestValidOrgNumber(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"315000009", true},
		{"315010004", true},
		{"315030005", true},
		{"974760673", true}, // Brønnøysundregistrene, the register's own published number
		{"315000008", false},
		{"974760672", false},
		{"31500000", false},
		{"3150000090", false},
		{"31500000a", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := ValidOrgNumber(tt.in); got != tt.want {
			t.Errorf("ValidOrgNumber(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
	// Control digit 10 makes the number invalid for every last digit.
	for i := 0; i < 1000; i++ {
		base := "31500" + pad(i, 3)
		sum := 0
		for j, w := range orgWeights {
			sum += int(base[j]-'0') * w
		}
		if mod11Control(sum) >= 0 {
			continue
		}
		for d := 0; d < 10; d++ {
			if ValidOrgNumber(base + pad(d, 1)) {
				t.Fatalf("%s%d accepted although the control digit would be 10", base, d)
			}
		}
		return
	}
	t.Fatal("no base with remainder 10 found")
}

func pad(n, w int) string {
	s := ""
	for i := 0; i < w; i++ {
		s = string(rune('0'+n%10)) + s
		n /= 10
	}
	return s
}
