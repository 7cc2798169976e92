# guestprep-script: rollback
# guestprep-output: json
# Restores, newest first, every change the journal recorded and marks it rolled back.
# Driver installs are recorded but not reversed (removing a boot driver is riskier than keeping it).
$ParamsJson = [string]$args[0]
$journal = Read-JsonFile -Path $JournalPath
$restored = @()
if ($null -ne $journal) {
    $entries = @($journal.entries)
    for ($i = $entries.Count - 1; $i -ge 0; $i--) {
        $e = $entries[$i]
        if ($e.rolled_back) { continue }
        switch ([string]$e.kind) {
            'registry_set' {
                if ($null -eq $e.before) { Remove-ItemProperty -Path ([string]$e.path) -Name ([string]$e.name) -ErrorAction SilentlyContinue }
                else { $null = New-ItemProperty -Path ([string]$e.path) -Name ([string]$e.name) -Value ([int]$e.before) -PropertyType DWord -Force }
                $restored += [ordered]@{ id = $e.id; kind = $e.kind; target = $e.target; restored = $e.before }
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
