# guestprep-script: rollback
# guestprep-output: json
# Restores, newest first, every change the journal recorded and marks it rolled back.
# One switch branch per journal kind the scripts write (tests/windows/test_rollback_kinds.py
# fails when a script writes a kind this switch does not replay). What cannot be undone safely
# is reported as skipped with the reason, never silently dropped.
$ParamsJson = [string]$args[0]
$MsiGone = @(0, 1605, 3010)   # uninstalled, not installed (ERROR_UNKNOWN_PRODUCT), reboot required

function ConvertFrom-JournalValue {
    # The registry value a journal entry recorded, typed for New-ItemProperty -PropertyType.
    # Binary values are journaled as comma-joined decimal bytes ("1,255,0,0"); DWORDs as numbers
    # (a REG_DWORD above 0x7FFFFFFF reads back as a negative Int32, New-ItemProperty wants Int32).
    param($Value, [string]$Type)
    switch ($Type) {
        'DWord' {
            $n = [int64]$Value
            if ($n -gt [int]::MaxValue) { $n = $n - 4294967296 }
            return [int]$n
        }
        'Binary' {
            $text = [string]$Value
            if ($text -eq '') { return , ([byte[]]@()) }
            return , ([byte[]]@($text.Split(',') | ForEach-Object -Process { [byte]([string]$_).Trim() }))
        }
        'String' { return [string]$Value }
        'ExpandString' { return [string]$Value }
        default { throw ('journal value of unknown registry type ' + $Type) }
    }
}

$build = [int](Get-CimInstance -ClassName Win32_OperatingSystem).BuildNumber
$journal = Read-JsonFile -Path $JournalPath
$restored = @()
if ($null -ne $journal) {
    $entries = @($journal.entries)
    for ($i = $entries.Count - 1; $i -ge 0; $i--) {
        $e = $entries[$i]
        if ($e.rolled_back) { continue }
        switch ([string]$e.kind) {
            'registry_set' {
                # entries of lib.ps1's Set-RegistryValueJournaled carry no type: REG_DWORD
                $type = 'DWord'
                if ($e.PSObject.Properties['type'] -and $e.type) { $type = [string]$e.type }
                if (@('DWord', 'String', 'ExpandString', 'Binary') -notcontains $type) {
                    $restored += [ordered]@{ id = $e.id; kind = $e.kind; target = $e.target; skipped = ('registry type ' + $type + ' is not restored by this rollback') }
                    continue
                }
                if ($null -eq $e.before) { Remove-ItemProperty -LiteralPath ([string]$e.path) -Name ([string]$e.name) -ErrorAction SilentlyContinue }
                else { $null = New-ItemProperty -LiteralPath ([string]$e.path) -Name ([string]$e.name) -Value (ConvertFrom-JournalValue -Value $e.before -Type $type) -PropertyType $type -Force }
                $restored += [ordered]@{ id = $e.id; kind = $e.kind; target = $e.target; restored = $e.before }
                $e.rolled_back = $true
            }
            'registry_key_create' {
                # the key did not exist before guestprep created it: remove it with whatever is under it
                if (Test-Path -LiteralPath ([string]$e.path)) { Remove-Item -LiteralPath ([string]$e.path) -Recurse -Force }
                $restored += [ordered]@{ id = $e.id; kind = $e.kind; target = $e.target; removed = $true }
                $e.rolled_back = $true
            }
            'driver_stage' {
                # pnputil /delete-driver from Windows 10 1607 / Server 2016 (build 14393), -d before
                # (learn.microsoft.com/windows-hardware/drivers/devtest/pnputil-command-syntax). Without
                # /force pnputil refuses a package a device still uses: kept, reported as skipped.
                if ($build -ge 14393) { $argv = @('/delete-driver', [string]$e.published_name) } else { $argv = @('-d', [string]$e.published_name) }
                $r = Invoke-Native -FilePath 'pnputil.exe' -ArgumentList $argv
                if ($r.ExitCode -ne 0) {
                    $restored += [ordered]@{ id = $e.id; kind = $e.kind; target = $e.target; skipped = ('pnputil ' + ($argv -join ' ') + ' exited ' + $r.ExitCode + ' (package in use?): ' + ([string]$r.StdOut + ' ' + [string]$r.StdErr).Trim()) }
                    continue
                }
                $restored += [ordered]@{ id = $e.id; kind = $e.kind; target = $e.target; removed = $true; published_name = [string]$e.published_name }
                $e.rolled_back = $true
            }
            'msi_install' {
                # msiexec exit codes: learn.microsoft.com/windows/win32/msi/error-codes (1605: not installed)
                Initialize-GuestprepDir
                $log = Join-Path -Path $GuestprepDir -ChildPath 'rollback-msiexec.log'
                $r = Invoke-Native -FilePath 'msiexec.exe' -ArgumentList @('/x', [string]$e.product_code, '/qn', '/norestart', '/l*v', $log)
                if ($MsiGone -notcontains $r.ExitCode) {
                    $restored += [ordered]@{ id = $e.id; kind = $e.kind; target = $e.target; skipped = ('msiexec /x exited ' + $r.ExitCode + ', see ' + $log) }
                    continue
                }
                $restored += [ordered]@{ id = $e.id; kind = $e.kind; target = $e.target; removed = $true; exit_code = $r.ExitCode }
                $e.rolled_back = $true
            }
            'task_create' {
                # a task already gone (it removed itself after its first KVM boot) is fine
                $existed = Remove-GuestprepTask -Name ([string]$e.target)
                $restored += [ordered]@{ id = $e.id; kind = $e.kind; target = $e.target; removed = $true; existed = $existed }
                $e.rolled_back = $true
            }
            'file_replace' {
                # the old file was copied to the backup path before it was replaced
                if ($e.PSObject.Properties['backup'] -and (Test-Path -LiteralPath ([string]$e.backup))) {
                    $tmp = [string]$e.target + '.guestprep-restore'
                    [System.IO.File]::Copy([string]$e.backup, $tmp, $true)
                    if ([System.IO.File]::Exists([string]$e.target)) { [System.IO.File]::Delete([string]$e.target) }
                    [System.IO.File]::Move($tmp, [string]$e.target)
                    $restored += [ordered]@{ id = $e.id; kind = $e.kind; target = $e.target; restored = [string]$e.backup }
                    $e.rolled_back = $true
                } else {
                    $restored += [ordered]@{ id = $e.id; kind = $e.kind; target = $e.target; skipped = 'backup missing' }
                }
            }
            'file_write' {
                Remove-Item -LiteralPath ([string]$e.target) -ErrorAction SilentlyContinue
                $restored += [ordered]@{ id = $e.id; kind = $e.kind; target = $e.target; removed = $true }
                $e.rolled_back = $true
            }
            'bitlocker_suspend' {
                try { $null = Resume-BitLocker -MountPoint ([string]$e.target) } catch { throw ('cannot resume BitLocker on ' + $e.target + ': ' + $_.Exception.Message) }
                $restored += [ordered]@{ id = $e.id; kind = $e.kind; target = $e.target; resumed = $true }
                $e.rolled_back = $true
            }
            default { $restored += [ordered]@{ id = $e.id; kind = $e.kind; target = $e.target; skipped = 'not reversible' } }
        }
    }
    Write-JsonFile -Path $JournalPath -Value ([ordered]@{ schema = 'guestprep.windows.journal/1'; entries = $entries })
    if (Test-Path -Path $StatePath) { Remove-Item -Path $StatePath }
}
Write-Result -Value ([ordered]@{ ok = $true; restored = $restored })
