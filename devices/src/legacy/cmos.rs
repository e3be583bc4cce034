//! CMOS real-time clock and NVRAM (MC146818-style) at ports 0x70/0x71: enough for a
//! guest to read the wall-clock time at boot.
//!
//! Time registers are served in BCD, 24-hour mode, from the host's clock at the moment
//! of the read, so the guest's clock follows the host's. Other bytes are plain NVRAM.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::bus::BusDevice;

/// Index port; the data port is at +1.
pub const CMOS_PORT: u16 = 0x70;
/// Ports decoded.
pub const CMOS_PORT_COUNT: u64 = 2;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_STATUS_A: u8 = 0x0a;
const REG_STATUS_B: u8 = 0x0b;
const REG_STATUS_C: u8 = 0x0c;
const REG_STATUS_D: u8 = 0x0d;
const REG_CENTURY: u8 = 0x32;

/// Status B: 24-hour mode, BCD values, no interrupts enabled.
const STATUS_B_24H: u8 = 0x02;
/// Status A: 32.768 kHz time base, 1024 Hz rate, update not in progress.
const STATUS_A_DEFAULT: u8 = 0x26;
/// Status D: valid RAM and time.
const STATUS_D_VALID: u8 = 0x80;

/// Broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CivilTime {
    pub year: u32,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    /// 1 = Sunday ... 7 = Saturday, as the RTC counts.
    pub weekday: u8,
}

impl CivilTime {
    /// Converts seconds since the Unix epoch to a UTC calendar time.
    pub fn from_unix(secs: u64) -> Self {
        let days = secs / 86_400;
        let rem = secs % 86_400;
        // 1970-01-01 was a Thursday (weekday 5 when Sunday is 1).
        let weekday = ((days + 4) % 7) as u8 + 1;
        let (year, month, day) = date_from_days(days as i64);
        Self {
            year: year as u32,
            month,
            day,
            hour: (rem / 3600) as u8,
            minute: ((rem / 60) % 60) as u8,
            second: (rem % 60) as u8,
            weekday,
        }
    }
}

/// Gregorian date of a day count since 1970-01-01 (era-based, exact for all u32 years).
fn date_from_days(days: i64) -> (i64, u8, u8) {
    let shifted = days + 719_468; // days since 0000-03-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u8;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u8;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn to_bcd(v: u8) -> u8 {
    ((v / 10) << 4) | (v % 10)
}

/// The CMOS device.
pub struct Cmos {
    index: u8,
    nvram: [u8; 128],
    clock: fn() -> u64,
}

impl Default for Cmos {
    fn default() -> Self {
        Self::new()
    }
}

impl Cmos {
    /// A CMOS whose clock follows the host's.
    pub fn new() -> Self {
        Self::with_clock(host_unix_time)
    }

    /// A CMOS reading time from `clock` (seconds since the epoch); for tests.
    pub fn with_clock(clock: fn() -> u64) -> Self {
        Self { index: 0, nvram: [0; 128], clock }
    }

    fn read_register(&self, index: u8) -> u8 {
        let now = CivilTime::from_unix((self.clock)());
        match index {
            REG_SECONDS => to_bcd(now.second),
            REG_MINUTES => to_bcd(now.minute),
            REG_HOURS => to_bcd(now.hour),
            REG_WEEKDAY => to_bcd(now.weekday),
            REG_DAY => to_bcd(now.day),
            REG_MONTH => to_bcd(now.month),
            REG_YEAR => to_bcd((now.year % 100) as u8),
            REG_CENTURY => to_bcd((now.year / 100 % 100) as u8),
            REG_STATUS_A => STATUS_A_DEFAULT,
            REG_STATUS_B => STATUS_B_24H,
            REG_STATUS_C => 0,
            REG_STATUS_D => STATUS_D_VALID,
            other => self.nvram[usize::from(other & 0x7f)],
        }
    }
}

fn host_unix_time() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if data.len() != 1 {
            data.fill(0xff);
            return;
        }
        data[0] = match offset {
            0 => self.index,
            1 => self.read_register(self.index),
            _ => 0xff,
        };
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match offset {
            // Bit 7 of the index port masks NMIs on real hardware; ignore it.
            0 => self.index = value & 0x7f,
            1 => match self.index {
                // Time and status registers: the clock is the host's, not settable.
                REG_SECONDS..=REG_STATUS_D | REG_CENTURY => {}
                idx => self.nvram[usize::from(idx)] = value,
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(cmos: &mut Cmos, reg: u8) -> u8 {
        cmos.write(0, &[reg]);
        let mut d = [0u8];
        cmos.read(1, &mut d);
        d[0]
    }

    #[test]
    fn known_dates_convert() {
        assert_eq!(
            CivilTime::from_unix(0),
            CivilTime { year: 1970, month: 1, day: 1, hour: 0, minute: 0, second: 0, weekday: 5 }
        );
        // 2000-02-29 12:34:56 UTC (leap day), a Tuesday.
        assert_eq!(
            CivilTime::from_unix(951_827_696),
            CivilTime { year: 2000, month: 2, day: 29, hour: 12, minute: 34, second: 56, weekday: 3 }
        );
        // 2026-11-22 00:00:00 UTC, a Sunday.
        let t = CivilTime::from_unix(1_795_305_600);
        assert_eq!((t.year, t.month, t.day, t.weekday), (2026, 11, 22, 1));
    }

    #[test]
    fn registers_are_bcd() {
        let mut cmos = Cmos::with_clock(|| 951_827_696);
        assert_eq!(read(&mut cmos, REG_SECONDS), 0x56);
        assert_eq!(read(&mut cmos, REG_MINUTES), 0x34);
        assert_eq!(read(&mut cmos, REG_HOURS), 0x12);
        assert_eq!(read(&mut cmos, REG_DAY), 0x29);
        assert_eq!(read(&mut cmos, REG_MONTH), 0x02);
        assert_eq!(read(&mut cmos, REG_YEAR), 0x00);
        assert_eq!(read(&mut cmos, REG_CENTURY), 0x20);
        assert_eq!(read(&mut cmos, REG_STATUS_B), STATUS_B_24H);
        assert_eq!(read(&mut cmos, REG_STATUS_A) & 0x80, 0, "no update in progress");
    }

    #[test]
    fn nvram_keeps_writes_and_clock_ignores_them() {
        let mut cmos = Cmos::with_clock(|| 0);
        cmos.write(0, &[0x40]);
        cmos.write(1, &[0xab]);
        assert_eq!(read(&mut cmos, 0x40), 0xab);
        cmos.write(0, &[REG_SECONDS]);
        cmos.write(1, &[0x99]);
        assert_eq!(read(&mut cmos, REG_SECONDS), 0x00);
        // NMI-mask bit is stripped from the index.
        assert_eq!(read(&mut cmos, 0x80 | 0x40), 0xab);
    }
}
