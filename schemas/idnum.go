package schemas

import "time"

// Identity numbers. The checks here are the ones JSON Schema cannot express:
// the mod-11 control digits and a plausible date inside a fødselsnummer.

var (
	fnrWeights1 = [9]int{3, 7, 6, 1, 8, 9, 4, 5, 2}
	fnrWeights2 = [10]int{5, 4, 3, 2, 7, 6, 5, 4, 3, 2}
	orgWeights  = [8]int{3, 2, 7, 6, 5, 4, 3, 2}
)

// ValidFodselsnummer reports whether s is a well-formed Norwegian national
// identity number: 11 digits, both mod-11 control digits right and a date
// part that is a real calendar date. Accepted are ordinary fødselsnummer,
// D-numbers (first digit + 4) and synthetic test numbers (month + 80, as
// Skatteetaten's synthetic persons in Tenor), also combined. H-numbers and
// the post-2032 control-digit rules are not accepted.
func ValidFodselsnummer(s string) bool {
	return checkFodselsnummer(s) == ""
}

// checkFodselsnummer returns "" for a valid number, or the FieldError code
// that says what is wrong: "pattern", "checksum" or "implausible_date".
func checkFodselsnummer(s string) string {
	d, ok := digits(s, 11)
	if !ok {
		return CodePattern
	}
	sum := 0
	for i, w := range fnrWeights1 {
		sum += d[i] * w
	}
	if k := mod11Control(sum); k < 0 || k != d[9] {
		return CodeChecksum
	}
	sum = 0
	for i, w := range fnrWeights2 {
		sum += d[i] * w
	}
	if k := mod11Control(sum); k < 0 || k != d[10] {
		return CodeChecksum
	}
	if _, ok := fodselsdato(d); !ok {
		return CodeImplausibleDate
	}
	return ""
}

// FodselsdatoFromNumber returns the date of birth encoded in a valid
// fødselsnummer, D-number or synthetic number.
func FodselsdatoFromNumber(s string) (time.Time, bool) {
	if checkFodselsnummer(s) != "" {
		return time.Time{}, false
	}
	d, _ := digits(s, 11)
	return fodselsdato(d)
}

// fodselsdato decodes the date part, undoing the D-number (+40 on the day)
// and synthetic (+80 on the month) offsets, and derives the century from
// the individual number as Skatteetaten allocates them.
func fodselsdato(d []int) (time.Time, bool) {
	day := d[0]*10 + d[1]
	month := d[2]*10 + d[3]
	yy := d[4]*10 + d[5]
	ind := d[6]*100 + d[7]*10 + d[8]
	if day > 40 {
		day -= 40 // D-number
	}
	if month > 80 {
		month -= 80 // synthetic (Tenor)
	}
	var year int
	switch {
	case ind <= 499:
		year = 1900 + yy
	case ind <= 749 && yy >= 54:
		year = 1800 + yy
	case ind >= 900 && yy >= 40:
		year = 1900 + yy
	case yy <= 39:
		year = 2000 + yy
	default:
		return time.Time{}, false
	}
	if month < 1 || month > 12 || day < 1 || day > 31 {
		return time.Time{}, false
	}
	t := time.Date(year, time.Month(month), day, 0, 0, 0, 0, time.UTC)
	if t.Day() != day || int(t.Month()) != month {
		return time.Time{}, false // 31 April, 29 February in a common year
	}
	return t, true
}

// ValidOrgNumber reports whether s is a well-formed organisation number from
// Enhetsregisteret: 9 digits, mod-11 control digit with weights 3 2 7 6 5 4 3 2.
func ValidOrgNumber(s string) bool {
	return checkOrgNumber(s) == ""
}

func checkOrgNumber(s string) string {
	d, ok := digits(s, 9)
	if !ok {
		return CodePattern
	}
	sum := 0
	for i, w := range orgWeights {
		sum += d[i] * w
	}
	if k := mod11Control(sum); k < 0 || k != d[8] {
		return CodeChecksum
	}
	return ""
}

// mod11Control returns the control digit for a weighted sum, or -1 when the
// remainder makes the number invalid (control digit would be 10).
func mod11Control(sum int) int {
	k := 11 - sum%11
	switch k {
	case 11:
		return 0
	case 10:
		return -1
	}
	return k
}

func digits(s string, n int) ([]int, bool) {
	if len(s) != n {
		return nil, false
	}
	d := make([]int, n)
	for i := 0; i < n; i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return nil, false
		}
		d[i] = int(c - '0')
	}
	return d, true
}
