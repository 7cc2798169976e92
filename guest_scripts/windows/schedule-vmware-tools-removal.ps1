# guestprep-script: schedule-vmware-tools-removal
# guestprep-output: json
# Installs a first-boot task that removes VMware Tools only once the guest runs on
# KVM (its installer refuses to run off ESXi, and removing it earlier breaks the
# VMware drivers the guest still uses). Nothing is uninstalled now.
$ParamsJson = [string]$args[0]
$p = ConvertFrom-Json -InputObject $ParamsJson
# the product code ends up in the task's command line: accept nothing but a GUID
if ([string]$p.product_code -notmatch '^\{[0-9A-Fa-f-]{36}\}$') { throw ('not an MSI product code: ' + [string]$p.product_code) }
Initialize-GuestprepDir
$script = Join-Path -Path $GuestprepDir -ChildPath 'remove-vmware-tools.ps1'
[System.IO.File]::WriteAllText($script, [string]$p.removal_script, (New-Object -TypeName System.Text.UTF8Encoding -ArgumentList $false))
$task = [string]$p.task
$null = & schtasks.exe '/Query' '/TN' $task 2>$null
if ($LASTEXITCODE -ne 0) {
    Add-JournalEntry -Operation 'windows.vmware_tools_removal' -Kind 'task_create' -Target $task -Detail @{ script = $script; product_code = [string]$p.product_code }
    $null = & schtasks.exe '/Create' '/TN' $task '/SC' 'ONSTART' '/RU' 'SYSTEM' '/RL' 'HIGHEST' '/F' '/TR' ('powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -File "' + $script + '" -ProductCode ' + [string]$p.product_code)
    if ($LASTEXITCODE -ne 0) { throw ('schtasks /Create exited ' + $LASTEXITCODE) }
}
Update-GuestprepState -Key 'vmware_tools_removal' -Value ([ordered]@{ task = $task; product_code = [string]$p.product_code })
Write-Result -Value ([ordered]@{ ok = $true; steps = @([ordered]@{ task = $task }) })
